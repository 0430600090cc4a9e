"""Many threads validating and renewing at once: no error, no duplicate renewals."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from mlflow_descope_auth import ClientSession, DescopeClient
from mlflow_descope_auth.emulator import Emulator


def test_many_threads_validate_shared_and_distinct_tokens(emulator: Emulator) -> None:
    client = DescopeClient(emulator.project_id, base_url=emulator.base_url)
    tokens = [emulator.login(u)["sessionJwt"] for u in ("admin", "editor", "reader")]
    expected = [client.validate_session(t).email for t in tokens]

    def work(i: int) -> str | None:
        return client.validate_session(tokens[i % 3]).email

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(work, range(3000)))
    assert results == [expected[i % 3] for i in range(3000)]


def test_concurrent_renewals_are_single_flight() -> None:
    # Sessions live 3 s and renew 0.75 s before expiry; refresh tokens rotate on every use, so two
    # concurrent refreshes with one token would make the second fail with 401.
    with Emulator(session_ttl=3, rotate_refresh_tokens=True) as emu:
        client = DescopeClient(emu.project_id, base_url=emu.base_url)
        tokens = emu.login("editor")
        session = ClientSession(
            client, session_token=tokens["sessionJwt"], refresh_token=tokens["refreshJwt"]
        )
        errors: list[BaseException] = []
        seen: set[str] = set()
        stop = time.monotonic() + 8
        lock = threading.Lock()

        def hammer() -> None:
            while time.monotonic() < stop:
                try:
                    token = session.token()
                    client.validate_session(token)
                    with lock:
                        seen.add(token)
                except BaseException as exc:  # collected and asserted below
                    errors.append(exc)
                    return

        threads = [threading.Thread(target=hammer) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        refreshes = emu.stats()["refresh"]
    assert errors == []
    # One renewal per session lifetime, whatever the thread count: 8 s / ~2.25 s between renewals.
    assert 2 <= refreshes <= 6, refreshes
    assert len(seen) == refreshes + 1
