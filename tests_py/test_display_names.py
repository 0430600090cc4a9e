"""The display-name table on the auth databases the server supports, SQLite and a real PostgreSQL:
created on first use by any number of processes, a newer token's name wins over an older one's,
unknown usernames are left out."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mlflow_descope_auth import DescopeClient
from mlflow_descope_auth._core import Identity
from mlflow_descope_auth.emulator import Emulator
from mlflow_descope_auth.server import display_names

from .postgres import postgres_server


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "sqlite":
        engine = sa.create_engine(f"sqlite:///{tmp_path / 'auth.db'}")
        yield engine
        engine.dispose()
        return
    with postgres_server() as server:
        engine = sa.create_engine(server.create_database("auth"))
        yield engine
        engine.dispose()


def identity_named(
    client: DescopeClient, emu: Emulator, login_id: str, name: str, issued_ago: int
) -> Identity:
    claims = emu.session_claims(login_id)
    now = int(time.time())
    claims.update(name=name, iat=now - issued_ago, exp=now + 600)
    return client.validate_session(emu.sign(claims))


def test_a_newer_tokens_name_wins_and_unknown_ids_are_left_out(
    engine: Any, client: DescopeClient, emulator: Emulator
) -> None:
    display_names.forget_memo()
    newer = identity_named(client, emulator, "editor", "Eddie Editor", issued_ago=10)
    display_names.remember(newer, engine)
    assert display_names.lookup([newer.username, "U2nobody"], engine) == {newer.username: "Eddie Editor"}
    # Another worker still holding an older token with an older name does not turn it back.
    display_names.forget_memo()
    display_names.remember(identity_named(client, emulator, "editor", "Ed (old)", issued_ago=300), engine)
    assert display_names.lookup([newer.username], engine) == {newer.username: "Eddie Editor"}
    display_names.forget_memo()
    display_names.remember(identity_named(client, emulator, "editor", "Edward Editor", issued_ago=1), engine)
    assert display_names.lookup([newer.username], engine) == {newer.username: "Edward Editor"}


def test_processes_that_meet_the_table_at_once_all_get_it(
    engine: Any, client: DescopeClient, emulator: Emulator
) -> None:
    people = [
        identity_named(client, emulator, login, f"Person {login}", issued_ago=5)
        for login in ("admin", "editor", "reader")
    ]
    display_names.forget_memo()
    display_names._created.clear()
    errors: list[BaseException] = []
    start = threading.Barrier(len(people))

    def first_use(identity: Identity) -> None:
        start.wait()
        try:
            display_names.remember(identity, engine)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=first_use, args=(p,)) for p in people]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert display_names.lookup([p.username for p in people], engine) == {p.username: p.name for p in people}


def test_a_token_without_a_name_uses_the_email_and_one_without_either_stores_nothing(
    client: DescopeClient, emulator: Emulator
) -> None:
    claims = emulator.session_claims("reader")
    claims.pop("name")
    assert display_names.display_name(client.validate_session(emulator.sign(claims))) == "reader@example.com"
    claims.pop("email")
    assert display_names.display_name(client.validate_session(emulator.sign(claims))) is None
