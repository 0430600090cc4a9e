"""An offline Descope emulator: Descope's wire format on loopback, with really signed tokens.

The official ``descope`` SDK and this project's own client accept its tokens exactly as they accept
Descope's, so sign-in, refresh, access keys, key rotation and failures can be exercised with no
network and no Descope account. See ``server.py`` for ``Emulator``, ``app.py`` for the HTTP routes and
``users.py`` for the demo users and their access keys.

This package imports only the standard library, Starlette, uvicorn, PyJWT and cryptography: it must
work before (and without) the compiled extension.
"""

from .clock import Clock
from .keys import SUPPORTED_ALGORITHMS, SigningKey
from .server import DEFAULT_PORT, DEMO_PROJECT_ID, Emulator, EmulatorConfig, run_forever
from .users import DEMO_ACCESS_KEYS, DEMO_TENANT_ID, User, demo_users, load_users_file

__all__ = [
    "DEFAULT_PORT",
    "DEMO_ACCESS_KEYS",
    "DEMO_PROJECT_ID",
    "DEMO_TENANT_ID",
    "SUPPORTED_ALGORITHMS",
    "Clock",
    "Emulator",
    "EmulatorConfig",
    "SigningKey",
    "User",
    "demo_users",
    "load_users_file",
    "run_forever",
]
