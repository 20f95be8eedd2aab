"""The README's curl examples run as printed against a live server."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

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


def test_readme_python_example_works(server):
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- readme-python:start -->\s*```python\n(.*?)```", text, re.S)
    assert block, "README lost its Python example"
    env = {**os.environ, "FLEXDB_URL": server.url, "FLEXDB_KEY": server.admin_key}
    result = subprocess.run([sys.executable, "-c", block.group(1)], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "'name': 'Ada'" in result.stdout and "refused:" in result.stdout
    assert "data.name" in result.stdout or "'name'" in result.stdout.split("refused:")[1]


def test_readme_links_resolve_inside_the_repository():
    """Every link is a file (or a heading) of this repository: nothing outside it."""
    text = (ROOT / "README.md").read_text()
    without_code = re.sub(r"```.*?```", "", text, flags=re.S)
    headings = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-")
                for h in re.findall(r"^#+ (.+)$", without_code, re.M)}
    links = re.findall(r"\]\(([^)\s]+)\)", without_code)
    assert links
    for link in links:
        assert "://" not in link and not link.startswith(("/", "..")), link
        path, _, anchor = link.partition("#")
        if path:
            assert (ROOT / path).exists(), f"README links to {path}, which is not in the repo"
        else:
            assert anchor in headings, f"README links to #{anchor}, which is no heading"
    assert "shared/" not in text  # the product never points at the team's own notes


def test_readme_settings_table_is_the_declared_one():
    from scripts.settings_table import MARKERS, render
    found = MARKERS.search((ROOT / "README.md").read_text())
    assert found, "README lost its settings table markers"
    assert found.group(2) == render(), "run scripts/settings_table.py --write"


def test_limits_page_is_current_and_names_every_limit_setting():
    from rpc_server.config import Settings
    from scripts.limits_table import PAGE, render, settings_named
    assert PAGE.read_text() == render(), "run scripts/limits_table.py --write"
    limit_like = {name for name in Settings.model_fields
                  if any(word in name for word in ("max", "limit", "concurrency", "cpu",
                                                   "memory", "running", "queued", "timeout"))}
    unnamed = limit_like - settings_named() - {"db_pool_max", "db_connect_timeout_s",
                                               "facade_max_connections",
                                               "facade_rpc_timeout_s"}
    assert not unnamed, f"limits missing from docs/LIMITS.md: {sorted(unnamed)}"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_schema_change_examples_work(server):
    script = "set -euo pipefail\n" + readme_examples("schema-examples")
    env = {**os.environ, "FLEXDB_URL": server.url, "FLEXDB_KEY": server.admin_key}
    result = subprocess.run(["bash", "-c", script], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    dry, refused, allowed, outdated, versions, first = lines
    assert '"nodes_failing":1' in dry and '"path":"data.price"' in dry
    assert '"code":-32004' in refused and '"nodes_invalid"' in refused
    assert '"schema_version":2' in allowed and '"nodes_failing":1' in allowed
    assert outdated.count('"schema_version":1') == 1 and '"ink"' in outdated
    assert '"mode":"allow_invalid"' in versions
    assert '"schema_version":1' in first


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_migration_examples_work(server):
    script = "set -euo pipefail\n" + readme_examples("migrate-examples")
    env = {**os.environ, "FLEXDB_URL": server.url, "FLEXDB_KEY": server.admin_key}
    result = subprocess.run(["bash", "-c", script], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    job, left = lines
    assert '"status":"succeeded"' in job and '"changed":1' in job and '"failed":1' in job
    assert '"reason":"invalid"' in job and '"field":"data.price"' in job
    assert left.count('"schema_version":1') == 1 and '"cap"' in left and '"ink"' not in left
