"""The ``mlflow-descope-auth`` command: one module per subcommand family.

User errors (bad configuration, Descope refusing a credential, a port in use) end with one line on
stderr and a non-zero exit code, never a traceback; output meant for a shell (``export`` lines, JSON)
goes to stdout and everything else to stderr.
"""

from __future__ import annotations

import click

from mlflow_descope_auth.cli.credentials import token, whoami
from mlflow_descope_auth.cli.demo import demo
from mlflow_descope_auth.cli.doctor import doctor
from mlflow_descope_auth.cli.emulator import emulator
from mlflow_descope_auth.cli.login import login, logout
from mlflow_descope_auth.cli.plugins import PLUGIN_ENTRY_POINTS, verify_plugin

__all__ = ["PLUGIN_ENTRY_POINTS", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mlflow-descope-auth")
def main() -> None:
    """Descope authentication for MLflow: client plugins, server plugin, offline Descope emulator.

    New here? `mlflow-descope-auth demo` runs the whole product offline.
    """


for command in (demo, login, logout, doctor, token, whoami, verify_plugin, emulator):
    main.add_command(command)
