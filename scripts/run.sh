#!/usr/bin/env bash
# Start flexdb: creates .venv if needed, installs the project, runs the JSON-RPC server.
# With no FLEXDB_DATABASE_URL it starts an embedded PostgreSQL under FLEXDB_DATA_DIR
# (default ./.flexdb) and stops it again on Ctrl-C.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh" ""
cd "$ROOT"
exec "$VENV/bin/flexdb" serve "$@"
