"""The ``mlflow-descope-auth`` command."""

from __future__ import annotations

import sys
from importlib.metadata import entry_points

import click

# Entry-point group -> the object our `descope` entry should load.
PLUGIN_ENTRY_POINTS = {
    "mlflow.request_auth_provider": "mlflow_descope_auth.client.auth:DescopeAuthProvider",
    "mlflow.request_header_provider": "mlflow_descope_auth.client.headers:DescopeHeaderProvider",
    "mlflow.run_context_provider": "mlflow_descope_auth.client.tags:DescopeRunContextProvider",
    "mlflow.app": "mlflow_descope_auth.server.app:create_app",
}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mlflow-descope-auth")
def main() -> None:
    """Descope authentication for MLflow: client plugins, server plugin, offline Descope emulator."""


@main.command("verify-plugin")
def verify_plugin() -> None:
    """List the MLflow entry points this package registers; exit 1 if one is missing or broken."""
    failed = False
    for group, target in PLUGIN_ENTRY_POINTS.items():
        found = [ep for ep in entry_points(group=group) if ep.name == "descope"]
        if not found:
            click.echo(f"MISSING  {group}: descope (reinstall: pip install mlflow-descope-auth)")
            failed = True
            continue
        ep = found[0]
        try:
            ep.load()
        except Exception as exc:  # a broken plugin is exactly what this command reports
            click.echo(f"BROKEN   {group}: descope = {ep.value} ({type(exc).__name__}: {exc})")
            failed = True
            continue
        note = "" if ep.value == target else f"  (expected {target})"
        failed = failed or bool(note)
        click.echo(f"OK       {group}: descope = {ep.value}{note}")
    if failed:
        click.echo("Some entry points are missing or broken.", err=True)
        sys.exit(1)
    click.echo("All entry points are registered.")


@main.command("emulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8765, show_default=True, type=int, help="Port (0 picks a free one).")
@click.option(
    "--project-id", default="P2demoEmulatorProject0000000", show_default=True, help="Project id to emulate."
)
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


if __name__ == "__main__":
    main()
