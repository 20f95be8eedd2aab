#!/usr/bin/env bash
# Start flexdb: creates .venv if needed, installs the project, runs the sandbox worker (which
# executes pipelines), the JSON-RPC server and the REST facade (port FLEXDB_FACADE_PORT, default
# 8000, forwarding to the server). With no FLEXDB_DATABASE_URL the server starts an embedded
# PostgreSQL under FLEXDB_DATA_DIR (default ./.flexdb). Ctrl-C or SIGTERM stops all three.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh" ""
cd "$ROOT"
# The server signs its requests to the worker with a shared secret; one is made up per start
# unless you set it (set it when the worker runs elsewhere).
if [ -z "${FLEXDB_SANDBOX_SECRET:-}" ]; then
    FLEXDB_SANDBOX_SECRET="$("$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(32))')"
    export FLEXDB_SANDBOX_SECRET
fi
export FLEXDB_RPC_URL="${FLEXDB_RPC_URL:-http://127.0.0.1:${FLEXDB_PORT:-5000}/jsonrpc}"
export FLEXDB_SANDBOX_URL="${FLEXDB_SANDBOX_URL:-http://127.0.0.1:${FLEXDB_SANDBOX_PORT:-5001}}"

"$VENV/bin/flexdb" sandbox &
worker=$!
"$VENV/bin/flexdb" facade &
facade=$!
"$VENV/bin/flexdb" serve "$@" &
server=$!
stop() { kill -TERM "$server" "$worker" "$facade" 2>/dev/null || true; }
trap stop INT TERM
set +e
wait "$server"
status=$?
# A signal ends the first wait early: wait again for the server's clean stop.
kill -0 "$server" 2>/dev/null && { wait "$server"; status=$?; }
kill -TERM "$worker" "$facade" 2>/dev/null
wait "$worker" "$facade" 2>/dev/null
exit "$status"
