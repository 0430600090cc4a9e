#!/usr/bin/env bash
# The whole test suite, from a fresh clone on a fresh machine: installs what it needs, builds the
# Rust extension once (through pip), then runs every check. Usage: ./scripts/test.sh
#
# ./scripts/test.sh --fast: the fast tier, for the edit-test loop (under a minute once the Rust
# dependencies are built; the first run compiles them). Formatting and lints, the Rust tests (debug
# profile), and the in-process Python tests (tests_py/unit, marker `unit`) against this checkout's
# code: the extension is built in debug and copied next to the Python sources. It installs nothing:
# run the full suite once first.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

if [[ ${1:-} == --fast ]]; then
    step "fast tier: formatting and lints"
    cargo fmt --check
    ruff check python tests_py benchmarks examples
    ruff format --check python tests_py benchmarks examples
    step "fast tier: Rust tests (debug)"
    cargo test
    step "fast tier: in-process Python tests (tests_py/unit)"
    cargo build --features python --lib
    # A new file renamed over the old one: a process still running with the old one loaded (the
    # full suite in another shell) keeps its copy instead of crashing on a rewritten library.
    cp target/debug/libmlflow_descope_auth.so python/mlflow_descope_auth/_core.abi3.so.new
    mv -f python/mlflow_descope_auth/_core.abi3.so.new python/mlflow_descope_auth/_core.abi3.so
    PYTHONPATH=python python3 -m pytest -m unit tests_py/unit
    exit 0
elif (($#)); then
    echo "usage: $0 [--fast]" >&2
    exit 2
fi

# Real parts the tests drive: a browser (login page), PostgreSQL and nginx (multi-replica), wrk (load).
SYSTEM_PACKAGES=(chromium nginx postgresql wrk)
missing=()
for pkg in "${SYSTEM_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    step "install Debian packages: ${missing[*]}"
    sudo_cmd=()
    [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

step "install the package and test tools (builds the Rust extension, release profile)"
python3 -m pip install --quiet --disable-pip-version-check ".[test]"

step "Rust: format, lints, tests"
cargo fmt --check
cargo clippy --release --all-targets --features python -- -D warnings
cargo test --release

step "Python: ruff, mypy, stubs that match the extension"
ruff check python tests_py benchmarks examples
ruff format --check python tests_py benchmarks examples
mypy
mypy tests_py benchmarks examples
# From an empty directory outside the source tree, so the installed extension is what gets checked
# (and no stray module in the working directory shadows the standard library).
stub_dir=$(mktemp -d)
(cd "$stub_dir" && python3 -m mypy.stubtest mlflow_descope_auth._core)
rm -rf "$stub_dir"

step "pytest: both tiers (unit: in-process; system: real mlflow server, real HTTP, the offline Descope emulator)"
python3 -m pytest tests_py

step "pytest again, against MLflow 3.18.0's server code (scripts/mlflow-3.18-venv.sh)"
# The tests that depend on which routes MLflow serves and how its permission checks work: the route
# sweep, the permission tests, the contracts of the MLflow internals the package uses, the
# authorization sweep and the server jobs' gateway calls. This list is the one place that says so.
MLFLOW_318_TESTS=(
    tests_py/test_route_sweep.py
    tests_py/test_server_permissions.py
    tests_py/test_permission_lookups.py
    tests_py/unit/test_mlflow_internals.py
    tests_py/test_authz_sweep.py
    tests_py/test_server_jobs.py
)
./scripts/mlflow-3.18-venv.sh
.venv-mlflow318/bin/python -m pytest "${MLFLOW_318_TESTS[@]}"
