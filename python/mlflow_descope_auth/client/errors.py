"""Client errors a person can act on, in one line.

Two parts:

* ``diagnose``: Descope's answer to an access-key exchange or a refresh with an unknown project id
  is a generic 4xx ("Request is invalid"), which reads as a bad key. The project's key set is the
  one request that depends on the project id alone: when it is refused too, the project id is what
  is wrong, and the error says so.
* ``install_excepthook``: MLflow wraps an auth plugin's exception into ``MlflowException("API request
  to ... failed with exception ...")``, and Python prints a long traceback through MLflow and
  ``requests`` for it. Once the Descope auth plugin is in use, an uncaught exception caused by a
  Descope credential, or a refusal from the server (401/403, whose messages the server plugin writes
  for people), ends the script with one line on stderr instead. Every other exception keeps its
  traceback, as does this one under ``python -X dev``. In IPython and Jupyter the same applies to a
  cell's error.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

from mlflow_descope_auth._core import (
    AccessKeyExchangeError,
    ConfigurationError,
    DescopeApiError,
    DescopeAuthError,
    DescopeClient,
    RefreshFailedError,
)

# MLflow's error codes for a refusal the server plugin explains to a person.
REFUSAL_CODES = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED"})
PREFIX = "mlflow-descope-auth: "


def diagnose(exc: DescopeAuthError, client: DescopeClient | None) -> DescopeAuthError:
    """``exc``, or a configuration error naming DESCOPE_PROJECT_ID when Descope does not know the
    project at all."""
    if client is None or not isinstance(exc, (AccessKeyExchangeError, RefreshFailedError)):
        return exc
    try:
        client.fetch_keys()
    except DescopeApiError:
        err = ConfigurationError(
            f"configuration error in DESCOPE_PROJECT_ID: Descope at {client.base_url} does not know the "
            f"project {client.project_id!r}; copy the project id from the Descope console (Project "
            "settings), and check DESCOPE_BASE_URI"
        )
        err.code, err.variable, err.keyword = "config_invalid", "DESCOPE_PROJECT_ID", "project_id"
        return err
    except DescopeAuthError:
        return exc  # out of reach: the original error says more
    return exc


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def one_line(exc: BaseException) -> str | None:
    """The line to show for ``exc``, or None when it is not one of ours."""
    for link in _chain(exc):
        if isinstance(link, DescopeAuthError):
            return PREFIX + str(link)
    error_code = getattr(exc, "error_code", None)
    if error_code in REFUSAL_CODES and type(exc).__name__ == "RestException":
        return f"{PREFIX}the MLflow server refused: {exc}"
    return None


_installed = False
_install_lock = threading.Lock()


def install_excepthook() -> None:
    """Once per process; chains to the hook that was there before."""
    global _installed
    with _install_lock:
        if _installed:
            return
        _installed = True
    previous: Callable[..., Any] = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        line = None if sys.flags.dev_mode else one_line(value)
        if line is None:
            previous(kind, value, tb)
        else:
            print(line, file=sys.stderr)

    sys.excepthook = hook
    _install_ipython_handler()


def _install_ipython_handler() -> None:
    ipython_module = sys.modules.get("IPython")
    get_ipython = getattr(ipython_module, "get_ipython", None)
    shell = get_ipython() if get_ipython is not None else None
    if shell is None or sys.flags.dev_mode:
        return
    if getattr(shell, "custom_exceptions", None):
        return  # someone else handles exceptions there already

    def handler(
        self: Any,
        kind: type[BaseException],
        value: BaseException,
        tb: TracebackType | None,
        tb_offset: Any = None,
    ) -> Any:
        line = one_line(value)
        if line is None:
            return self.showtraceback((kind, value, tb), tb_offset=tb_offset)
        print(line, file=sys.stderr)
        return None

    shell.set_custom_exc((Exception,), handler)
