# Sourced by run.sh and test.sh: create .venv if needed and install the project into it,
# pinned by scripts/constraints.txt (the versions CI tested), showing progress.
# $1 = pip extras to install ("" or "test").
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON="${PYTHON:-python3}"
CONSTRAINTS="$ROOT/scripts/constraints.txt"
if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV" >&2
    "$PYTHON" -m venv "$VENV"
fi
extras="${1:-}"
target="$ROOT"
[ -n "$extras" ] && target="$ROOT[$extras]"

# One line per package pip collects (on a terminal: one line, rewritten in place); pip's
# whole output goes to a log that is shown if it fails.
_pip() {
    local log="$VENV/pip-install.log" status line n=0
    set +e
    "$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar off \
        -c "$CONSTRAINTS" "$@" >"$log" 2>&1 &
    local pid=$!
    tail -n +1 -f --pid="$pid" "$log" 2>/dev/null | while IFS= read -r line; do
        case "$line" in
            Collecting*|"Installing collected"*)
                [[ "$line" == Collecting* ]] && n=$((n + 1))
                if [ -t 2 ]; then printf '\r\033[K  %3d  %.70s' "$n" "$line" >&2
                else echo "  ${line:0:120}" >&2; fi ;;
        esac
    done
    wait "$pid"; status=$?
    set -e
    [ -t 2 ] && printf '\r\033[K' >&2
    if [ "$status" -ne 0 ]; then
        echo "pip install failed; its output:" >&2; cat "$log" >&2
        return "$status"
    fi
}

# Reinstall only when pyproject.toml or the constraints changed since the last install.
stamp="$VENV/.flexdb-installed-${extras:-base}"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ] || [ "$CONSTRAINTS" -nt "$stamp" ]; then
    echo "installing flexdb${extras:+ with [$extras]} into $VENV (the first time takes a minute)" >&2
    _pip --upgrade pip
    _pip -e "$target"
    touch "$stamp"
    echo "installed" >&2
fi

# Compiled bytecode is kept under .venv (never beside the sources): each flexdb process (the
# server's workers, the sandbox, the facade, the CLI; the tests start hundreds) then imports
# without compiling every module again, even where the environment says not to write
# bytecode (PYTHONDONTWRITEBYTECODE), which would make every start compile everything.
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX="$VENV/pycache"
