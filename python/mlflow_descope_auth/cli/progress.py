"""Small terminal helpers shared by the subcommands: progress while waiting, masked secrets."""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import click


def wait_for(what: str, ready: Callable[[], bool], *, timeout: float, interval: float = 0.5) -> bool:
    """Polls ``ready`` until it is true or ``timeout`` passes, printing a dot a second on stderr so a
    slow start is visibly alive. ``ready`` may raise ``click.ClickException`` to give up early."""
    click.echo(f"{what} ", err=True, nl=False)
    deadline = time.monotonic() + timeout
    next_dot = time.monotonic() + 1.0
    while True:
        if ready():
            click.echo(" ready.", err=True)
            return True
        now = time.monotonic()
        if now >= deadline:
            click.echo(" timed out.", err=True)
            return False
        if now >= next_dot:
            click.echo(".", err=True, nl=False)
            next_dot = now + 1.0
        time.sleep(interval)


def mask_secret(value: str) -> str:
    """Enough to recognise which secret is set, never enough to use it."""
    if len(value) <= 12:
        return f"set ({len(value)} characters, hidden)"
    return f"{value[:4]}…{value[-2:]} ({len(value)} characters)"


def mask_url_password(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(not a valid URL)"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
