"""The command line's one-time sign-in codes in the auth DB, on SQLite and on a real PostgreSQL: a
code issued by one worker is redeemed by another, exactly once however many race for it, and the
table holds nothing a reader could use."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from mlflow_descope_auth._core import InvalidTokenError, open_with_code
from mlflow_descope_auth.server.cli_login import CliCodes, CliLoginError, CliRequest

from .postgres import Postgres, postgres_server

TOKENS = {"sessionJwt": "eyJsession.not-a-real-one.x", "refreshJwt": "eyJrefresh.not-a-real-one.y"}


@pytest.fixture(scope="module")
def pg() -> Iterator[Postgres]:
    with postgres_server() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
def db_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'auth.db'}"
    pg: Postgres = request.getfixturevalue("pg")
    return pg.create_database(f"auth_{os.urandom(4).hex()}")


def pkce() -> tuple[str, CliRequest]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, CliRequest.parse({"cli": "40000", "state": "s" * 32, "challenge": challenge})


def test_a_code_from_one_worker_is_redeemed_once_by_another(db_uri: str) -> None:
    issuer, redeemer = CliCodes(db_uri), CliCodes(db_uri)
    verifier, request = pkce()
    code = issuer.issue(request, TOKENS)
    assert redeemer.redeem(code, verifier) == TOKENS
    with pytest.raises(CliLoginError, match="already used"):
        issuer.redeem(code, verifier)


def test_of_many_racing_for_one_code_exactly_one_wins(db_uri: str) -> None:
    verifier, request = pkce()
    code = CliCodes(db_uri).issue(request, TOKENS)
    workers = [CliCodes(db_uri) for _ in range(8)]
    start = threading.Barrier(len(workers))
    outcomes: list[object] = []

    def race(codes: CliCodes) -> None:
        start.wait()
        try:
            outcomes.append(codes.redeem(code, verifier))
        except CliLoginError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=race, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count(TOKENS) == 1, outcomes
    assert all(isinstance(o, CliLoginError) for o in outcomes if o != TOKENS), outcomes


def test_the_table_holds_nothing_a_reader_could_use(db_uri: str) -> None:
    verifier, request = pkce()
    code = CliCodes(db_uri).issue(request, TOKENS)
    with sa.create_engine(db_uri).connect() as conn:
        rows = conn.execute(sa.text("SELECT key, challenge, sealed FROM descope_auth_cli_codes")).all()
    assert len(rows) == 1
    key, challenge, sealed = rows[0]
    assert key == hashlib.sha256(code.encode()).hexdigest() and code not in key
    assert challenge == request.challenge and verifier not in challenge
    raw = bytes(sealed)
    for secret in (*TOKENS.values(), code):
        assert secret.encode() not in raw
    # Sealed by the core with the code: nothing else opens it, the code does.
    with pytest.raises(InvalidTokenError):
        open_with_code(secrets.token_urlsafe(32), raw)
    assert json.loads(open_with_code(code, raw)) == TOKENS


def test_a_code_with_the_wrong_verifier_is_spent(db_uri: str) -> None:
    codes = CliCodes(db_uri)
    verifier, request = pkce()
    code = codes.issue(request, TOKENS)
    with pytest.raises(CliLoginError, match="verifier does not match"):
        codes.redeem(code, secrets.token_urlsafe(48))
    with pytest.raises(CliLoginError, match="already used"):
        codes.redeem(code, verifier)
