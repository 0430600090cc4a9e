"""Our scripts in MLflow's own page: when MLflow serves its UI (``index.html`` at the static prefix's
root), the gate adds a ``<script defer>`` for each file in ``UI_SCRIPTS``, served from ``/auth/static/``.

The scripts turn an ended session into the login page, add "Sign out" to MLflow's user menu and show
people's names for their Descope user ids (``static/mlflow-ui.js``).
"""

from __future__ import annotations

import functools
import hashlib
import re
from html import escape
from pathlib import Path

STATIC_DIR = Path(__file__).with_name("static")

# File names in static/, injected in this order.
UI_SCRIPTS: tuple[str, ...] = ("mlflow-ui.js", "admin-page.js")

# Request headers that would let MLflow answer the page with 304 or a byte range of the file, i.e.
# without the scripts (or with a cached copy naming old ones).
CONDITIONAL_HEADERS = ("if-none-match", "if-modified-since", "if-range", "range")

_HEAD_END = re.compile(rb"</head\s*>", re.IGNORECASE)
_BODY_START = re.compile(rb"<body[\s>]", re.IGNORECASE)


def is_ui_page(method: str, path: str, prefix: str) -> bool:
    """The request for MLflow's UI page: ``GET {prefix}/``. The UI routes in the URL fragment, so this
    is the only path that serves ``index.html``."""
    return method == "GET" and path == f"{prefix}/"


@functools.cache
def _version(name: str) -> str:
    """A digest of the file, in the script's URL: a browser never runs a stale copy after an upgrade
    (the files are cached for an hour)."""
    return hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:12]


def script_tags(prefix: str) -> bytes:
    tags = "".join(
        f'<script src="{escape(prefix)}/auth/static/{name}?v={_version(name)}" defer></script>'
        for name in UI_SCRIPTS
    )
    return tags.encode()


def is_plain_html(headers: list[tuple[str, str]]) -> bool:
    """An HTML body we can edit: ``text/html`` and not compressed (any ``Content-Encoding``)."""
    content_type = encoding = ""
    for name, value in headers:
        lower = name.lower()
        if lower == "content-type":
            content_type = value.lower()
        elif lower == "content-encoding":
            encoding = value.strip().lower()
    return content_type.startswith("text/html") and encoding in ("", "identity")


def inject(body: bytes, prefix: str) -> bytes:
    """``body`` with our script tags before ``</head>`` (else at the start of ``<body>``, else at the
    end: a deferred script runs wherever it stands)."""
    tags = script_tags(prefix)
    if (match := _HEAD_END.search(body)) or (match := _BODY_START.search(body)):
        at = match.start()
    else:
        at = len(body)
    return body[:at] + tags + body[at:]
