"""The README's settings table, made from the declarations in rpc_server/config.py (one
place says what a setting is). `python scripts/settings_table.py` prints it; `--write`
puts it into README.md between its settings markers (a test checks they agree)."""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a file, the repository root is not on sys.path: the imports after this line need
# it first (hence their noqa: E402).
sys.path.insert(0, str(ROOT))

from rpc_server.config import Settings, env_var, shown_default  # noqa: E402
from rpc_server.config_secrets import MASTER_KEY_FILE_VAR, MASTER_KEY_VAR  # noqa: E402

MARKERS = re.compile(r"(<!-- settings:start -->\n)(.*?)(<!-- settings:end -->)", re.S)


def render() -> str:
    rows = ["| variable | default | read by | meaning |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        readers = ", ".join((field.json_schema_extra or {}).get("read_by", ()))
        meaning = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{env_var(name)}` | {shown_default(name)} | {readers} | {meaning} |")
    rows.append(f"| `{MASTER_KEY_VAR}` / `{MASTER_KEY_FILE_VAR}` | unset | every command | "
                "the Fernet key (or a file holding it) that decrypts `ENC(...)` values, see "
                "below |")
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="update README.md in place")
    args = parser.parse_args()
    if not args.write:
        print(render(), end="")
        return
    readme = ROOT / "README.md"
    text, count = MARKERS.subn(lambda m: m.group(1) + render() + m.group(3), readme.read_text())
    if count != 1:
        sys.exit("README.md lacks one <!-- settings:start --> ... <!-- settings:end --> block")
    readme.write_text(text)


if __name__ == "__main__":
    main()
