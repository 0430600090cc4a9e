"""nginx (Debian's package) as a round-robin reverse proxy in front of several servers, for the tests.

A plain foreground process with a generated config: pid file, logs and temp paths all live in a
fresh directory, nothing under /etc or /var is touched. The proxy settings are the ones the
documented production topology uses (RELIABILITY.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .servers import free_port, stop_group, wait_http

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def nginx_config(prefix: Path, port: int, upstreams: Sequence[str]) -> str:
    servers = "\n".join(
        f"        server {u.removeprefix('http://')} max_fails=1 fail_timeout=2s;" for u in upstreams
    )
    user = "user root root;" if os.geteuid() == 0 else ""
    return f"""
{user}
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;

    # Round-robin (nginx's default): no sticky sessions, so every replica sees every session.
    upstream mlflow {{
{servers}
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;            # artifact uploads
        location / {{
            proxy_pass http://mlflow;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # The gate's CSRF check compares Origin with Host: keep the host the browser used.
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_read_timeout 300s;
            proxy_request_buffering off;
            # A replica that is down: try the next one. Only for requests nginx may safely repeat
            # (not POSTs, unless the replica never got them: 'error' covers a refused connect).
            proxy_next_upstream error timeout http_502;
        }}
    }}
}}
"""


@contextmanager
def nginx_proxy(upstreams: Sequence[str]) -> Iterator[str]:
    """nginx on a free loopback port, round-robin over `upstreams`; yields its URL."""
    prefix = Path(tempfile.mkdtemp(prefix="mlflow-descope-nginx-"))
    try:
        (prefix / "tmp").mkdir()
        port = free_port()
        conf = prefix / "nginx.conf"
        conf.write_text(nginx_config(prefix, port, upstreams))
        log = open(prefix / "stdout.log", "wb")  # noqa: SIM115  (closed below)
        proc = subprocess.Popen(
            [NGINX, "-c", str(conf), "-p", str(prefix), "-e", str(prefix / "error.log"), "-g", "daemon off;"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_http(f"{url}/health", timeout=60, proc=proc)
            yield url
        finally:
            stop_group(proc)
            log.close()
    finally:
        shutil.rmtree(prefix, ignore_errors=True)
