#!/usr/bin/env bash
# Start flexdb: creates .venv if needed, installs the project, then `flexdb up`: the sandbox
# worker (pipelines), the JSON-RPC server and the REST facade, with an embedded PostgreSQL
# under FLEXDB_DATA_DIR (default ./.flexdb) when FLEXDB_DATABASE_URL is unset. It ends its
# start with the endpoints and, at the first start, the platform admin's key. Ctrl-C or
# SIGTERM stops everything. Flags go to `flexdb up` (`./scripts/run.sh --help`).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh" ""
cd "$ROOT"
exec "$VENV/bin/flexdb" up "$@"
