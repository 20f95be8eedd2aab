#!/usr/bin/env bash
# Run the whole test suite: creates .venv if needed, installs test extras, checks the code
# with ruff and mypy (configured in pyproject.toml), then runs pytest.
# Uses FLEXDB_TEST_DATABASE_URL when set (a server to create a fresh test database on),
# otherwise an embedded PostgreSQL in a temporary directory.
# FLEXDB_TEST_SKIP_LINT=1 skips ruff and mypy for a quick local run; CI (CI=true) never does.
# The tests run in FLEXDB_TEST_PROCESSES processes (default 2; 1: in this one), each file's
# tests in one of them (pytest-xdist, --dist loadfile: a module's servers are its own); each
# process has its own databases (and its own embedded PostgreSQL).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh" "test"
cd "$ROOT"
if [ "${FLEXDB_TEST_SKIP_LINT:-}" = 1 ] && [ "${CI:-}" != true ]; then
    echo "test.sh: FLEXDB_TEST_SKIP_LINT=1: ruff and mypy skipped" >&2
else
    "$VENV/bin/ruff" check rpc_server rest_facade sandbox_worker scripts tests \
        || { echo "test.sh: ruff found problems (above); fix them before the tests run" >&2
             exit 1; }
    "$VENV/bin/mypy" \
        || { echo "test.sh: mypy found type errors (above); fix them before the tests run" >&2
             exit 1; }
fi
processes="${FLEXDB_TEST_PROCESSES:-2}"
if [ "$processes" -gt 1 ]; then
    exec "$VENV/bin/python" -m pytest -n "$processes" --dist loadfile "$@"
fi
exec "$VENV/bin/python" -m pytest "$@"
