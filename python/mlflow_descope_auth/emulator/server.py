"""``Emulator``: an offline Descope project on loopback, for development, demos and tests.

    with Emulator() as emu:                      # demo users, RS256, a free port
        tokens = emu.login("reader")             # {"sessionJwt": ..., "refreshJwt": ..., ...}
        client = DescopeClient(project_id=emu.project_id, base_url=emu.base_url)
        client.validate_session(tokens["sessionJwt"])
        emu.clock.set_offset(-3600)              # tokens issued from now on date from an hour ago

``run_forever`` is what ``mlflow-descope-auth emulator`` runs: it serves until Ctrl-C.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import Any, TextIO

from .app import create_app
from .clock import Clock
from .errors import ApiError
from .faults import Fault, make_fault
from .keys import SUPPORTED_ALGORITHMS, KeyRing, SigningKey
from .listener import ThreadedServer
from .state import EmulatorState
from .tokens import TokenIssuer
from .traffic import Traffic
from .users import User, UserDirectory, demo_users, load_users_file

log = logging.getLogger("mlflow_descope_auth.emulator")

# Under 32 characters on purpose: the SDKs derive a regional API host from ids of 32+ characters.
DEMO_PROJECT_ID = "P2demoEmulatorProject0000000"
DEFAULT_PORT = 8765
_PROJECT_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class EmulatorConfig:
    """How to run the emulator; ``users`` / ``users_file`` replace the demo users (give at most one)."""

    project_id: str = DEMO_PROJECT_ID
    host: str = "127.0.0.1"
    port: int = 0  # 0 = any free port; see Emulator.port
    algorithm: str = "RS256"
    session_ttl: int = 600
    refresh_ttl: int = 30 * 24 * 3600
    rotate_refresh_tokens: bool = False
    users: list[User] | None = None
    users_file: str | os.PathLike[str] | None = None
    # The emulator hands out tokens to anyone who asks; listening beyond loopback must be deliberate.
    allow_remote: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.project_id, str) or not _PROJECT_ID_RE.match(self.project_id):
            raise ValueError("project_id: must be 1-128 letters, digits, '-' or '_' (like P2abc...)")
        if self.algorithm not in SUPPORTED_ALGORITHMS:
            raise ValueError(f"algorithm: must be one of {', '.join(SUPPORTED_ALGORITHMS)}")
        for name in ("session_ttl", "refresh_ttl"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}: must be a positive whole number of seconds")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ValueError("port: must be 0 (any free port) or 1-65535")
        if not self.allow_remote and not _is_loopback(self.host):
            raise ValueError(
                f"host: {self.host!r} is not a loopback address; the emulator signs tokens for anyone who "
                "asks, so it listens on 127.0.0.1 unless allow_remote is set"
            )
        if self.users is not None and self.users_file is not None:
            raise ValueError("users_file: give either users or users_file, not both")

    def load_users(self) -> list[User]:
        if self.users_file is not None:
            return load_users_file(self.users_file)
        return list(self.users) if self.users is not None else demo_users()


class Emulator:
    """An emulated Descope project served on its own thread. Use as a context manager, or start/stop.

    ``clock`` is the emulator's notion of now (default: the system clock, offset 0); ``emu.clock``
    moves it for tokens issued from then on (see clock.py).
    """

    def __init__(
        self, config: EmulatorConfig | None = None, *, clock: Clock | None = None, **overrides: Any
    ) -> None:
        self.config = dataclasses.replace(config or EmulatorConfig(), **overrides)
        cfg = self.config
        self.clock = clock or Clock()
        keys = KeyRing(cfg.algorithm)
        issuer = TokenIssuer(
            keys,
            cfg.project_id,
            issuer_base=self._url_for(cfg.port),
            session_ttl=cfg.session_ttl,
            refresh_ttl=cfg.refresh_ttl,
            clock=self.clock,
        )
        self.state = EmulatorState(
            project_id=cfg.project_id,
            keys=keys,
            users=UserDirectory(cfg.load_users()),
            issuer=issuer,
            rotate_refresh_tokens=cfg.rotate_refresh_tokens,
        )
        self._traffic = Traffic()
        app = create_app(self.state, on_outage=self._outage_from_http, traffic=self._traffic)
        self._listener = ThreadedServer(app, cfg.host, cfg.port)
        self._lifecycle = threading.RLock()
        self._started = False
        self._outage: Fault | None = None
        self._outage_timer: threading.Timer | None = None

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> Emulator:
        with self._lifecycle:
            if not self._started:
                self._listener.start()
                self._started = True
                # The port is known only now; tokens name this server as their issuer.
                self.state.issuer.issuer_base = self.base_url
                log.info("Descope emulator listening on %s (project %s)", self.base_url, self.project_id)
        return self

    def stop(self) -> None:
        with self._lifecycle:
            self._cancel_outage_timer()
            self._outage = None
            self._listener.stop()
            self._started = False

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- addresses -----------------------------------------------------------------------------------

    def _url_for(self, port: int) -> str:
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.config.host, self.config.host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"

    @property
    def port(self) -> int:
        return self._listener.port

    @property
    def base_url(self) -> str:
        """What to give clients as the Descope base URL (``DESCOPE_BASE_URI``), e.g. http://127.0.0.1:PORT."""
        return self._url_for(self.port)

    @property
    def project_id(self) -> str:
        return self.config.project_id

    @property
    def issuer(self) -> str:
        return self.state.issuer.issuer

    # -- tokens and keys -----------------------------------------------------------------------------

    def login(self, login_id: str) -> dict[str, Any]:
        """The JWTResponse ``POST /emulator/login`` returns (session and refresh token), without HTTP."""
        try:
            return self.state.login(login_id)
        except ApiError:
            raise KeyError(f"no emulator user with login id {login_id!r}") from None

    def exchange_access_key(self, access_key: str) -> dict[str, Any]:
        """What ``POST /v1/auth/accesskey/exchange`` returns for ``access_key``, without HTTP."""
        try:
            return self.state.exchange(access_key)
        except ApiError as exc:
            raise PermissionError(exc.message) from None

    def session_claims(self, login_id: str, *, amr: Iterable[str] = ("pwd",)) -> dict[str, Any]:
        """The claims a new session of ``login_id`` would carry: a base for crafting tokens with ``sign``."""
        user = self._user(login_id)
        return self.state.issuer.session_claims(user, amr=amr)

    def sign(
        self,
        claims: Mapping[str, Any],
        *,
        headers: Mapping[str, Any] | None = None,
        key: SigningKey | None = None,
    ) -> str:
        """Signs any claims with the emulator's real current key (or ``key``); see ``TokenIssuer.sign``."""
        return self.state.issuer.sign(claims, headers=headers, key=key)

    @property
    def signing_key(self) -> SigningKey:
        """The current key: ``.kid``, ``.alg``, ``.private_key`` (a ``cryptography`` key object)."""
        return self.state.keys.current

    def jwks(self) -> list[dict[str, str]]:
        return self.state.keys.jwks()

    def rotate_keys(self, keep_old: bool = True) -> SigningKey:
        """Makes a new current key; ``keep_old=False`` unpublishes the old ones (their tokens then fail)."""
        return self.state.rotate_keys(keep_old=keep_old)

    # -- users ---------------------------------------------------------------------------------------

    @property
    def users(self) -> list[User]:
        """Copies of the current user records."""
        return self.state.users.all()

    def user(self, login_id: str) -> User:
        return self._user(login_id)

    def access_key_for(self, login_id: str) -> str:
        self._user(login_id)
        key = self.state.users.access_key_for(login_id)
        if key is None:
            raise KeyError(f"emulator user {login_id!r} has no live access key")
        return key

    def set_user_roles(
        self,
        login_id: str,
        roles: list[str],
        tenants: Mapping[str, Any] | None = None,
        permissions: list[str] | None = None,
    ) -> User:
        """Changes a user's roles (and tenants/permissions); tokens issued from now on carry them."""
        try:
            return self.state.update_user(login_id, roles=roles, tenants=tenants, permissions=permissions)
        except ApiError as exc:
            if exc.status == 404:
                raise KeyError(f"no emulator user with login id {login_id!r}") from None
            raise ValueError(exc.message) from None

    def revoke_sessions(self, login_id: str) -> int:
        """Revokes every refresh token of the user; returns how many were live."""
        self._user(login_id)
        return self.state.revoke_sessions(login_id)

    def revoke_access_key(self, access_key: str) -> bool:
        return self.state.users.revoke_access_key(access_key)

    def _user(self, login_id: str) -> User:
        user = self.state.users.find(login_id)
        if user is None:
            raise KeyError(f"no emulator user with login id {login_id!r}")
        return user

    # -- faults and stats ----------------------------------------------------------------------------

    def set_fault(
        self,
        mode: str,
        *,
        status: int = 503,
        delay: float = 0.0,
        seconds: float | None = None,
        routes: Iterable[str] | None = None,
        retry_after: int | None = None,
    ) -> None:
        """Turns on a fault (see faults.py). An ``outage`` returns once the socket is really closed."""
        fault = make_fault(
            mode, status=status, delay=delay, seconds=seconds, routes=routes, retry_after=retry_after
        )
        if fault.mode == "outage":
            self._begin_outage(fault)
        else:
            self.state.faults.set(fault)

    def clear_faults(self) -> None:
        """Ends every fault; an outage ends with the socket listening again on the same port."""
        self.state.faults.clear()
        self._end_outage()

    def faults(self) -> list[dict[str, Any]]:
        active = [f.describe() for f in self.state.faults.active()]
        with self._lifecycle:
            if self._outage is not None:
                active.append(self._outage.describe())
        return active

    def stats(self) -> dict[str, int]:
        return self.state.stats.snapshot()

    def reset_stats(self) -> None:
        self.state.stats.reset()
        self._traffic.reset()

    def traffic(self) -> dict[str, Any]:
        """Requests in flight and how the finished ones ended, per route (see traffic.py)."""
        return self._traffic.snapshot()

    # -- outages -------------------------------------------------------------------------------------

    def _outage_from_http(self, fault: Fault) -> None:
        # Called on the server's own event loop, which stop() waits for: hand off to another thread.
        worker = threading.Thread(
            target=self._begin_outage, args=(fault,), name="emulator-outage", daemon=True
        )
        worker.start()

    def _begin_outage(self, fault: Fault) -> None:
        with self._lifecycle:
            if not self._started:
                raise RuntimeError("start the emulator before setting an outage")
            self._cancel_outage_timer()
            self._outage = fault
            self._listener.stop()
            length = f"{fault.seconds:g} s" if fault.seconds is not None else "until cleared"
            log.info("outage: %s closed %s", self.base_url, length)
            if fault.seconds is not None:
                timer = threading.Timer(fault.seconds, self._end_outage)
                timer.daemon = True
                self._outage_timer = timer
                timer.start()

    def _end_outage(self) -> None:
        with self._lifecycle:
            if self._outage is None:
                return
            self._outage = None
            self._cancel_outage_timer()
            if self._started:
                try:
                    self._listener.start()
                except (OSError, RuntimeError) as exc:
                    log.error("outage over, but %s could not listen again: %s", self.base_url, exc)
                    raise
                log.info("outage over: %s is listening again", self.base_url)

    def _cancel_outage_timer(self) -> None:
        timer, self._outage_timer = self._outage_timer, None
        if timer is not None and timer is not threading.current_thread():
            timer.cancel()


def _print_banner(emu: Emulator, out: TextIO) -> None:
    lines = [
        "Descope emulator (offline; its tokens are trusted only by clients pointed at it)",
        f"  base URL    {emu.base_url}",
        f"  project id  {emu.project_id}",
        f"  issuer      {emu.issuer}",
        f"  keys        {emu.base_url}/v2/keys/{emu.project_id}",
        "",
        "  Point the server at it:",
        f"    export DESCOPE_PROJECT_ID={emu.project_id}",
        f"    export DESCOPE_BASE_URI={emu.base_url}",
        "",
        '  Users (sign in: POST /emulator/login {"loginId": "<login id>"}):',
    ]
    for user in emu.users:
        key = emu.state.users.access_key_for(user.login_id) or "-"
        roles = ",".join(user.roles) or "-"
        lines.append(f"    {user.login_id:<12} roles={roles:<16} {user.email or '-':<24} access key {key}")
    lines += ["", "  Ctrl-C stops it."]
    print("\n".join(lines), file=out, flush=True)


def run_forever(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    project_id: str = DEMO_PROJECT_ID,
    users_file: str | os.PathLike[str] | None = None,
    *,
    algorithm: str = "RS256",
    session_ttl: int = 600,
    refresh_ttl: int = 30 * 24 * 3600,
    rotate_refresh_tokens: bool = False,
    allow_remote: bool = False,
    out: TextIO | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Serves the emulator until Ctrl-C, SIGTERM or ``stop`` is set, after printing its URL and users."""
    stream = out or sys.stdout
    stop = stop or threading.Event()
    # Route and user-id lines only (never tokens), shown while this call runs and detached after.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s emulator %(message)s"))
    previous_level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        config = EmulatorConfig(
            project_id=project_id,
            host=host,
            port=port,
            algorithm=algorithm,
            session_ttl=session_ttl,
            refresh_ttl=refresh_ttl,
            rotate_refresh_tokens=rotate_refresh_tokens,
            users_file=users_file,
            allow_remote=allow_remote,
        )
        _serve(Emulator(config), stream, stop)
    finally:
        log.removeHandler(handler)
        log.setLevel(previous_level)


def _serve(emu: Emulator, stream: TextIO, stop: threading.Event) -> None:
    def terminate(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # Containers stop with SIGTERM; treat it like Ctrl-C (signals can only be set on the main thread).
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, terminate) if on_main_thread else None
    emu.start()
    try:
        _print_banner(emu, stream)
        # A timed wait, not one long sleep: Ctrl-C is delivered between waits on every platform.
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous)
        print("Descope emulator stopped.", file=stream, flush=True)
