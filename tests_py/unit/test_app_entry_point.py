"""The ``mlflow.app`` entry point as each server MLflow offers loads it: one object that is an ASGI
app for uvicorn and a WSGI app for gunicorn and waitress, built on first use. In-process, with the
real loaders (uvicorn's ``Config.load``, MLflow's command builders) and a stand-in for the built app
where the real one would need a server; the real servers run in tests_py/test_route_sweep.py."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

import pytest

from mlflow_descope_auth import mlflow_internals
from mlflow_descope_auth.server.app import DescopeApp, create_app

ENTRY_POINT = "mlflow_descope_auth.server.app:create_app"
Message = MutableMapping[str, Any]


def test_mlflow_passes_the_entry_point_to_every_server_by_name() -> None:
    """MLflow treats only a plain function as a factory: for an object it neither appends `()`
    (which waitress rejects) nor adds `--call` / `--factory`."""
    import mlflow.server

    assert mlflow.server._is_factory(ENTRY_POINT) is False
    waitress = mlflow.server._build_waitress_command("--threads=8", "127.0.0.1", 5000, ENTRY_POINT, False)  # type: ignore[no-untyped-call]
    assert waitress[-1] == ENTRY_POINT and "--call" not in waitress
    gunicorn = mlflow.server._build_gunicorn_command("", "127.0.0.1", 5000, 2, ENTRY_POINT)  # type: ignore[no-untyped-call]
    assert gunicorn[-1] == ENTRY_POINT
    uvicorn = mlflow.server._build_uvicorn_command(None, "127.0.0.1", 5000, 2, ENTRY_POINT, None, False)  # type: ignore[no-untyped-call]
    assert uvicorn[-1] == ENTRY_POINT and "--factory" not in uvicorn


def test_uvicorn_loads_it_as_an_asgi_app_without_building_it(caplog: pytest.LogCaptureFixture) -> None:
    import uvicorn
    from uvicorn.middleware.asgi2 import ASGI2Middleware

    with caplog.at_level(logging.WARNING, logger="uvicorn.error"):
        config = uvicorn.Config(ENTRY_POINT, proxy_headers=False)
        config.load()
    assert config.interface == "asgi2"
    assert isinstance(config.loaded_app, ASGI2Middleware)
    assert config.loaded_app.app is create_app  # type: ignore[comparison-overlap]
    # uvicorn probes for a factory by calling it with nothing: refused, so no "factory" warning.
    assert not [r for r in caplog.records if "factory" in r.getMessage()]
    with pytest.raises(TypeError, match="not a factory"):
        create_app()


class Built:
    """What the build returns: records the calls that reach it."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def __call__(self, *args: Any) -> Any:
        self.calls.append(args)
        if len(args) == 2:
            args[1]("200 OK", [])
            return [b"wsgi"]
        return self._asgi(*args)

    async def _asgi(self, scope: Message, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})


def counting(built: Built) -> tuple[Callable[[], Built], list[int]]:
    count = [0]

    def build() -> Built:
        count[0] += 1
        return built

    return build, count


def test_a_wsgi_server_gets_the_wsgi_app_built_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(mlflow_internals.SGI_NAME_VARIABLE, "waitress")
    built = Built()
    build, count = counting(built)
    app = DescopeApp(build)
    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        statuses.append(status)

    results: list[Iterable[bytes]] = []
    threads = [
        threading.Thread(target=lambda: results.append(app({"REQUEST_METHOD": "GET"}, start_response)))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert count == [1]
    assert [list(r) for r in results] == [[b"wsgi"]] * 8
    assert statuses == ["200 OK"] * 8


def test_a_build_that_failed_is_not_tried_again_and_the_worker_answers_503(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(mlflow_internals.SGI_NAME_VARIABLE, "gunicorn")
    attempts: list[int] = []

    def build() -> Any:
        attempts.append(1)
        raise RuntimeError("cannot reach postgresql://secret-host/auth")

    app = DescopeApp(build)
    answers: list[tuple[str, bytes]] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        answers.append((status, b""))

    bodies = [b"".join(app({"REQUEST_METHOD": "GET"}, start_response)) for _ in range(3)]
    # A second build would register MLflow's request hooks twice.
    assert attempts == [1]
    assert [status for status, _ in answers] == ["503 Service Unavailable"] * 3
    assert all(b"could not start" in body and b"secret-host" not in body for body in bodies)


@pytest.mark.parametrize("shape", ["asgi2", "asgi3"])
def test_an_asgi_server_gets_the_asgi_app(monkeypatch: pytest.MonkeyPatch, shape: str) -> None:
    monkeypatch.setenv(mlflow_internals.SGI_NAME_VARIABLE, "uvicorn")
    built = Built()
    build, count = counting(built)
    app = DescopeApp(build)
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/"}

    async def serve() -> None:
        if shape == "asgi2":
            await app(scope)(receive, send)
        else:
            await app(scope, receive, send)

    asyncio.run(serve())
    asyncio.run(serve())
    assert count == [1]
    assert [call[0] for call in built.calls] == [scope, scope]
    assert [m["status"] for m in sent] == [200, 200]


def test_a_server_other_than_the_one_mlflow_announced_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's auth app is FastAPI exactly under uvicorn: serving it through the other interface
    would fail on every request, so it fails at once and says how to start the server."""
    monkeypatch.setenv(mlflow_internals.SGI_NAME_VARIABLE, "gunicorn")
    app = DescopeApp(counting(Built())[0])
    with pytest.raises(RuntimeError, match=r"ASGI server.*_MLFLOW_SGI_NAME=gunicorn"):
        asyncio.run(app({"type": "http"}, _never_receive, _never_send))
    monkeypatch.setenv(mlflow_internals.SGI_NAME_VARIABLE, "uvicorn")
    with pytest.raises(RuntimeError, match=r"WSGI server.*_MLFLOW_SGI_NAME=uvicorn"):
        app({}, lambda *a: None)
    # Outside `mlflow server` (a WSGI server started by hand), MLflow's auth app is the Flask app.
    monkeypatch.delenv(mlflow_internals.SGI_NAME_VARIABLE)
    with pytest.raises(RuntimeError, match="announced no server"):
        asyncio.run(app({"type": "http"}, _never_receive, _never_send))
    assert list(app({}, lambda *a: None)) == [b"wsgi"]


def test_a_build_that_fails_stops_the_uvicorn_worker_with_its_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On uvicorn's start-up (lifespan) the failure is reported the way uvicorn stops a worker for,
    rather than leaving a worker that serves nothing."""
    monkeypatch.setenv(mlflow_internals.SGI_NAME_VARIABLE, "uvicorn")

    def build() -> Built:
        raise OSError("the auth database is unreachable")

    app = DescopeApp(build)
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(app({"type": "lifespan"}, receive, send))
    assert sent == [
        {
            "type": "lifespan.startup.failed",
            "message": "mlflow-descope-auth: the auth database is unreachable",
        }
    ]
    with pytest.raises(OSError, match="unreachable"):
        asyncio.run(app({"type": "http"}, receive, send))


async def _never_receive() -> Message:
    raise AssertionError("not called")


async def _never_send(message: Message) -> None:
    raise AssertionError("not called")
