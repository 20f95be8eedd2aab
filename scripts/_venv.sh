# Sourced by run.sh and test.sh: create .venv if needed and install the project into it.
# $1 = pip extras to install ("" or "test").
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV" >&2
    "$PYTHON" -m venv "$VENV"
fi
extras="${1:-}"
target="$ROOT"
[ -n "$extras" ] && target="$ROOT[$extras]"
# Reinstall only when pyproject.toml changed since the last install.
stamp="$VENV/.flexdb-installed-${extras:-base}"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    echo "installing flexdb${extras:+ with [$extras]} into $VENV" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$target" >&2
    touch "$stamp"
fi
