#!/usr/bin/env bash
# Run the whole test suite: creates .venv if needed, installs test extras, runs pytest.
# Uses FLEXDB_TEST_DATABASE_URL when set (a server to create a fresh test database on),
# otherwise an embedded PostgreSQL in a temporary directory.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh" "test"
cd "$ROOT"
exec "$VENV/bin/python" -m pytest "$@"
