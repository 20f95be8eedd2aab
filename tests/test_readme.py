"""The README's curl examples run as printed against a live server."""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from .conftest import ROOT, running_facade


def readme_examples(marker: str = "readme-examples") -> str:
    text = (ROOT / "README.md").read_text()
    block = re.search(rf"<!-- {marker}:start -->\s*```sh\n(.*?)```", text, re.S)
    assert block, f"README lost its {marker} block"
    return block.group(1)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_curl_examples_work(server):
    script = "set -euo pipefail\n" + readme_examples()
    env = {**os.environ, "FLEXDB_URL": server.url, "FLEXDB_KEY": server.admin_key}
    result = subprocess.run(["bash", "-c", script], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) >= 14
    # Every example succeeds except the one that shows a schema violation.
    errors = [line for line in lines if '"error"' in line]
    assert len(errors) == 1 and '"code":-32602' in errors[0] and "data.age" in errors[0]
    assert '"success":true' in lines[-1]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_rest_examples_work(server):
    script = "set -euo pipefail\n" + readme_examples("readme-rest-examples")
    with running_facade(server.url) as facade:
        env = {**os.environ, "FLEXDB_API": facade.base, "FLEXDB_KEY": server.admin_key}
        result = subprocess.run(["bash", "-c", script], env=env,
                                capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) >= 9
    # Every example succeeds except the one that shows a schema violation (422).
    errors = [line for line in lines if '"error"' in line]
    assert len(errors) == 1 and '"code":-32602' in errors[0] and "name" in errors[0], errors
    patched = next(line for line in lines if '"age":36' in line)
    assert '"tags"' not in patched  # the merge patch removed it
    assert lines[-1] == "204"
