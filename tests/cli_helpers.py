"""Helpers shared by the tests of the `flexdb` command: run it as a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from .conftest import ROOT


def flexdb(*args, env=None, timeout=60):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FLEXDB_")}
    full_env["FLEXDB_DATA_DIR"] = tempfile.mkdtemp(prefix="flexdb-cli-test-")
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "rpc_server", *args], env=full_env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
