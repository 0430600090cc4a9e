"""``emulator``: the offline Descope emulator as a long-running process."""

from __future__ import annotations

import click

from mlflow_descope_auth.emulator import DEFAULT_PORT, DEMO_PROJECT_ID


@click.command("emulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int, help="Port (0 picks a free one).")
@click.option("--project-id", default=DEMO_PROJECT_ID, show_default=True, help="Project id to emulate.")
@click.option(
    "--users-file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="JSON file of users (see the README); default: the demo users.",
)
@click.option(
    "--algorithm", type=click.Choice(["RS256", "ES256", "ES384"]), default="RS256", show_default=True
)
@click.option("--session-ttl", type=int, default=600, show_default=True, help="Session lifetime, seconds.")
@click.option(
    "--refresh-ttl",
    type=int,
    default=30 * 24 * 3600,
    show_default=True,
    help="Refresh token lifetime, seconds.",
)
@click.option(
    "--rotate-refresh-tokens/--no-rotate-refresh-tokens",
    default=False,
    show_default=True,
    help="Issue a new refresh token on every refresh and revoke the old one.",
)
def emulator(
    host: str,
    port: int,
    project_id: str,
    users_file: str | None,
    algorithm: str,
    session_ttl: int,
    refresh_ttl: int,
    rotate_refresh_tokens: bool,
) -> None:
    """Run the offline Descope emulator (keys, refresh, access keys, logout, me) on HOST:PORT."""
    from mlflow_descope_auth.emulator.server import run_forever

    try:
        run_forever(
            host=host,
            port=port,
            project_id=project_id,
            users_file=users_file,
            algorithm=algorithm,
            session_ttl=session_ttl,
            refresh_ttl=refresh_ttl,
            rotate_refresh_tokens=rotate_refresh_tokens,
        )
    except (ValueError, OSError) as exc:
        # Bad users file, bad option values, port in use: the user's to fix, so no traceback.
        raise click.ClickException(str(exc)) from None
