"""``verify-plugin``: are the four MLflow entry points registered and loadable?"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points

import click

# Entry-point group -> the object our `descope` entry should load.
PLUGIN_ENTRY_POINTS = {
    "mlflow.request_auth_provider": "mlflow_descope_auth.client.auth:DescopeAuthProvider",
    "mlflow.request_header_provider": "mlflow_descope_auth.client.headers:DescopeHeaderProvider",
    "mlflow.run_context_provider": "mlflow_descope_auth.client.tags:DescopeRunContextProvider",
    "mlflow.app": "mlflow_descope_auth.server.app:create_app",
}


@dataclass(frozen=True)
class PluginStatus:
    group: str
    ok: bool
    detail: str


def plugin_statuses() -> list[PluginStatus]:
    statuses = []
    for group, target in PLUGIN_ENTRY_POINTS.items():
        found = [ep for ep in entry_points(group=group) if ep.name == "descope"]
        if not found:
            statuses.append(
                PluginStatus(group, False, "missing (reinstall: pip install mlflow-descope-auth)")
            )
            continue
        ep = found[0]
        try:
            ep.load()
        except Exception as exc:  # a broken plugin is exactly what this reports
            statuses.append(PluginStatus(group, False, f"{ep.value} is broken ({type(exc).__name__}: {exc})"))
            continue
        if ep.value != target:
            statuses.append(PluginStatus(group, False, f"{ep.value} (expected {target})"))
        else:
            statuses.append(PluginStatus(group, True, ep.value))
    return statuses


@click.command("verify-plugin")
def verify_plugin() -> None:
    """List the MLflow entry points this package registers; exit 1 if one is missing or broken."""
    statuses = plugin_statuses()
    for s in statuses:
        label = "OK      " if s.ok else ("MISSING " if s.detail.startswith("missing") else "BROKEN  ")
        click.echo(f"{label} {s.group}: descope = {s.detail}")
    if not all(s.ok for s in statuses):
        click.echo("Some entry points are missing or broken.", err=True)
        raise SystemExit(1)
    click.echo("All entry points are registered.")
