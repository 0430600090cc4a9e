"""The core's short memory of sessions it let in just before they expired
(`DescopeClient.validate_admitted`): MLflow's authorization function runs later in the same request
and must not refuse a session whose time ran out in between. The grace itself is tested with a
moved clock in the Rust tests (src/admissions.rs, tests/refresh_coordination.rs)."""

from __future__ import annotations

import time

import pytest

from mlflow_descope_auth import DescopeClient, ExpiredTokenError
from mlflow_descope_auth.emulator import Emulator


def test_only_sessions_close_to_expiry_are_admitted() -> None:
    with Emulator(session_ttl=30) as short, Emulator(session_ttl=3600) as long:
        for emu, admitted in ((short, 1), (long, 0)):
            client = DescopeClient(emu.project_id, base_url=emu.base_url, http_timeout=5)
            token = emu.login("reader")["sessionJwt"]
            identity = client.validate_session(token)
            assert client.admitted_sessions == admitted
            assert client.validate_admitted(token) == identity


def test_an_expired_session_never_seen_is_not_admitted() -> None:
    with Emulator() as emu:
        client = DescopeClient(emu.project_id, base_url=emu.base_url, http_timeout=5)
        expired = emu.sign({**emu.session_claims("reader"), "exp": int(time.time()) - 30})
        with pytest.raises(ExpiredTokenError):
            client.validate_admitted(expired)
        assert client.admitted_sessions == 0
