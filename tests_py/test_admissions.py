"""The gate's short memory of sessions it let in (gate.Admissions): MLflow's authorization function
runs later in the same request and must not refuse a session whose time ran out in between."""

from __future__ import annotations

from mlflow_descope_auth import DescopeClient
from mlflow_descope_auth.emulator import Emulator
from mlflow_descope_auth.server.gate import Admissions


def test_sessions_close_to_expiry_are_remembered_others_not() -> None:
    with Emulator(session_ttl=30) as short, Emulator(session_ttl=3600) as long:
        admissions = Admissions()
        for emu, remembered in ((short, True), (long, False)):
            client = DescopeClient(emu.project_id, base_url=emu.base_url, http_timeout=5)
            token = emu.login("reader")["sessionJwt"]
            identity = client.validate_session(token)
            admissions.admit(token, identity)
            found = admissions.identity(token)
            assert (found is not None) is remembered
            if found is not None:
                assert found.username == identity.username
        # Another user's session (the emulator's RS256 tokens for one user in one second are identical).
        assert admissions.identity(short.login("editor")["sessionJwt"]) is None  # never admitted
