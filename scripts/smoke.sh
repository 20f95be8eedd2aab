#!/usr/bin/env bash
# Quick-start smoke test: `flexdb serve` with no database URL (embedded PostgreSQL) in a
# temporary data dir, one create_tenant through curl, a clean stop, and a restart that
# reuses the same data.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh" ""
cd "$ROOT"
DATA_DIR="$(mktemp -d /tmp/flexdb-smoke-XXXXXX)"
PORT="${SMOKE_PORT:-5077}"
LOG="$DATA_DIR/serve.log"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; rm -rf "$DATA_DIR"; }
trap cleanup EXIT

start() {
    env -u FLEXDB_DATABASE_URL FLEXDB_DATA_DIR="$DATA_DIR" FLEXDB_PORT="$PORT" \
        "$VENV/bin/flexdb" serve >>"$LOG" 2>&1 &
    pid=$!
    for _ in $(seq 1 120); do
        curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || { echo "smoke: server exited"; cat "$LOG"; exit 1; }
        sleep 0.5
    done
    echo "smoke: server did not become healthy"; cat "$LOG"; exit 1
}

stop() {
    kill -TERM "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then echo "smoke: server did not stop on SIGTERM"; exit 1; fi
    wait "$pid" || { echo "smoke: server exited with an error"; cat "$LOG"; exit 1; }
    pid=""
    if pgrep -f "$DATA_DIR/pg" >/dev/null; then echo "smoke: embedded PostgreSQL still running"; exit 1; fi
}

rpc() { curl -fsS "http://127.0.0.1:$PORT/jsonrpc" -H "Authorization: Bearer $KEY" \
           -H 'Content-Type: application/json' -d "$1"; }

start
KEY=$(sed -n 's/^Platform admin API key (shown once, keep it safe): //p' "$LOG")
[ -n "$KEY" ] || { echo "smoke: no admin key printed at first start"; cat "$LOG"; exit 1; }
out=$(rpc '{"jsonrpc":"2.0","method":"create_tenant","params":{"slug":"smoke","name":"Smoke"},"id":1}')
echo "create_tenant -> $out"
echo "$out" | grep -q '"slug":"smoke"' || { echo "smoke: create_tenant failed"; exit 1; }
stop
start
grep -c "Platform admin API key" "$LOG" | grep -qx 1 || { echo "smoke: a second admin key was printed"; exit 1; }
# Recover access from the server host while it runs: the key is alone on stdout.
KEY=$(env -u FLEXDB_DATABASE_URL FLEXDB_DATA_DIR="$DATA_DIR" "$VENV/bin/flexdb" create-key --admin 2>>"$LOG")
out=$(rpc '{"jsonrpc":"2.0","method":"list_tenants","params":{},"id":2}')
echo "$out" | grep -q '"total_count":1' || { echo "smoke: data not kept across restart: $out"; exit 1; }
stop
echo "smoke: OK (embedded PostgreSQL started, admin key printed once, served, stopped cleanly, reused on restart, create-key --admin works)"
