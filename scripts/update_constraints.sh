#!/usr/bin/env bash
# Re-pin scripts/constraints.txt: install flexdb with its test extras into a fresh, empty
# venv without the current pins (the newest versions pyproject.toml's ranges allow), then
# write what got installed. Run the suite on the result before committing it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TMP="$(mktemp -d /tmp/flexdb-pins-XXXXXX)"
trap 'rm -rf "$TMP"' EXIT
"${PYTHON:-python3}" -m venv "$TMP/venv"
"$TMP/venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$TMP/venv/bin/python" -m pip install --quiet --disable-pip-version-check "$ROOT[test]"
{
    echo "# The versions CI last tested (scripts/update_constraints.sh writes this file)."
    echo "# scripts/run.sh and scripts/test.sh install with -c this file, so a fresh machine"
    echo "# gets these; pyproject.toml holds the compatible ranges."
    "$TMP/venv/bin/python" -m pip freeze --all --exclude-editable | grep -v -i '^flexdb[= @]' \
        | grep -v -E '^(setuptools|wheel)=='
} > "$ROOT/scripts/constraints.txt"
echo "wrote $ROOT/scripts/constraints.txt"
