#!/usr/bin/env bash
# Builds .venv-mlflow318: the interpreter that runs this package against MLflow 3.18.0's server code.
#
# PyPI has mlflow==3.18.0 but not mlflow-skinny==3.18.0 (which mlflow 3.18.0 pins). The mlflow wheel
# holds MLflow's whole code base, so it is installed with --no-deps into a venv that sees the base
# interpreter's packages (--system-site-packages): MLflow 3.17.2's dependencies, and this package,
# installed there with its entry points (`pip install -e ".[test]"` or `pip install ".[test]"` first).
# The venv's `mlflow` shadows the base one, both the code and its dist-info.
#
# Idempotent: returns at once when the venv exists and imports MLflow 3.18.0 and this package.
# Usage: ./scripts/mlflow-3.18-venv.sh   (then `.venv-mlflow318/bin/python -m pytest ...`)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-mlflow318
VERSION=3.18.0
PYTHON=${PYTHON:-python3}
# Each part must come from where it should: MLflow from the venv, this package from the base.
CHECK="
import importlib.metadata as md, sys
import mlflow, mlflow.server, mlflow_descope_auth
from mlflow_descope_auth import _core
venv = sys.prefix
assert mlflow.__version__ == '$VERSION', mlflow.__version__
assert md.version('mlflow') == '$VERSION', md.version('mlflow')
assert mlflow.__file__.startswith(venv), mlflow.__file__
assert not mlflow_descope_auth.__file__.startswith(venv), mlflow_descope_auth.__file__
apps = {e.name: e.value for e in md.entry_points(group='mlflow.app')}
assert apps.get('descope') == 'mlflow_descope_auth.server.app:create_app', apps
"

if [[ -x $VENV/bin/python ]] && "$VENV/bin/python" -c "$CHECK" 2>/dev/null; then
    exit 0
fi

echo "building $VENV (mlflow==$VERSION over $("$PYTHON" -c 'import mlflow; print(mlflow.__version__)'))"
"$PYTHON" -m venv --clear --system-site-packages "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps "mlflow==$VERSION"
"$VENV/bin/python" -c "$CHECK"
