"""`flexdb up`, the quick start behind `scripts/run.sh`: an embedded PostgreSQL, the three
processes, one short block at the end of the start with the endpoints and (once) the admin
key, readable logs on a terminal and JSON lines otherwise, `create-key --admin` from another
directory finding the running quick start, and a clean stop on Ctrl-C."""
from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import pytest

from .conftest import free_port

BLOCK_END = re.compile(r"  admin key  .*\n(?:\s+shown once: keep it safe\n)?")
TEXT_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} (DEBUG|INFO|WARNING|ERROR)\s+[\w.]+: ")


class Output:
    """What a process wrote to its terminal (a pty) or pipe, read as it comes."""

    def __init__(self, fd: int):
        self.fd, self.text = fd, ""

    def read_until(self, pattern: re.Pattern, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            match = pattern.search(self.text)
            if match:
                return match
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{pattern.pattern!r} did not appear:\n{self.text[-4000:]}"
            self.read_for(min(remaining, 0.5))

    def read_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                return
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:  # the pty closes when the process exits
                return
            if not chunk:
                return
            self.text += chunk.decode(errors="replace").replace("\r\n", "\n")


@contextmanager
def quick_start(data_dir: Path, state_dir: Path, terminal: bool, **env: str):
    ports = {"FLEXDB_PORT": free_port(), "FLEXDB_FACADE_PORT": free_port(),
             "FLEXDB_SANDBOX_PORT": free_port()}
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FLEXDB_")}
    full_env.update({k: str(v) for k, v in ports.items()}, FLEXDB_DATA_DIR=str(data_dir),
                    XDG_STATE_HOME=str(state_dir), **env)
    if terminal:
        reader, writer = pty.openpty()
    else:
        reader, writer = os.pipe()
    proc = subprocess.Popen([sys.executable, "-m", "rpc_server", "up"], env=full_env,
                            cwd=tempfile.mkdtemp(prefix="flexdb-up-cwd-"), stdout=writer,
                            stderr=writer, stdin=subprocess.DEVNULL)
    os.close(writer)
    output = Output(reader)
    try:
        yield proc, output, ports
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for child in psutil.Process().children(recursive=True):
            if str(data_dir) in " ".join(child.cmdline()):
                child.kill()
        os.close(reader)


def stop(proc: subprocess.Popen, output: Output) -> int:
    proc.send_signal(signal.SIGINT)  # what Ctrl-C at the terminal sends
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        output.read_for(0.2)
    assert proc.poll() is not None, "flexdb up did not stop on SIGINT"
    output.read_for(0.2)
    return proc.returncode


def key_in(block: str) -> str | None:
    found = re.search(r"admin key  (fdb_\S+)", block)
    return found.group(1) if found else None


def access_line_fields(output: str, request_id: str, text: bool) -> dict:
    for line in output.splitlines():
        if request_id not in line:
            continue
        if text:
            assert TEXT_LINE.match(line), line
            return dict(re.findall(r"(\w+)=(\S+)", line.split(": ", 1)[1]))
        return json.loads(line)
    raise AssertionError(f"no access line for {request_id}:\n{output[-3000:]}")


def test_quick_start_ends_with_the_endpoints_and_key_and_stops_cleanly(tmp_path):
    data_dir, state = tmp_path / "data", tmp_path / "state"
    with quick_start(data_dir, state, terminal=True) as (proc, output, ports):
        end = output.read_until(BLOCK_END, timeout=120)
        before = output.text[:end.start()]
        block = output.text[output.text.rindex("flexdb is running"):end.end()]
        rpc = f"http://127.0.0.1:{ports['FLEXDB_PORT']}"
        rest = f"http://127.0.0.1:{ports['FLEXDB_FACADE_PORT']}"
        # A short block: the endpoints, the database, the key (once), nothing after it.
        assert len(block.splitlines()) <= 9, block
        assert f"POST {rpc}/jsonrpc" in block and f"{rest}/docs" in block
        assert str(data_dir.resolve() / "pg") in block
        key = key_in(block)
        assert key, block
        output.read_for(1.0)
        assert output.text[end.end():].strip() == "", "the start printed more after the block"
        # On a terminal the logs are readable lines, not JSON.
        logs = [line for line in before.splitlines() if line.strip()
                and not line.startswith(("flexdb is running", "  "))]
        assert logs and all(TEXT_LINE.match(line) for line in logs), logs
        assert not any(line.startswith("{") for line in logs)

        headers = {"Authorization": f"Bearer {key}", "X-Request-ID": "quick-start-text"}
        answer = httpx.post(rpc + "/jsonrpc", headers=headers, timeout=10, json={
            "jsonrpc": "2.0", "method": "create_tenant",
            "params": {"slug": "quick", "name": "Quick"}, "id": 1}).json()
        tenant = answer["result"]["tenant"]["id"]
        listed = httpx.get(f"{rest}/tenants/{tenant}", headers=headers, timeout=10)
        assert listed.status_code == 200 and listed.json()["tenant"]["slug"] == "quick"

        # create-key from anywhere finds the running quick start, and its key works.
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        created = subprocess.run(
            [sys.executable, "-m", "rpc_server", "create-key", "--admin"], cwd=elsewhere,
            env={**{k: v for k, v in os.environ.items() if not k.startswith("FLEXDB_")},
                 "XDG_STATE_HOME": str(state)},
            capture_output=True, text=True, timeout=60)
        assert created.returncode == 0, created.stderr
        assert str(data_dir.resolve()) in created.stderr
        assert list(elsewhere.iterdir()) == []  # nothing made where it ran
        new_key = created.stdout.strip()
        answer = httpx.post(rpc + "/jsonrpc", headers={"Authorization": f"Bearer {new_key}"},
                            timeout=10, json={"jsonrpc": "2.0", "method": "get_tenant",
                                              "params": {"id": tenant}, "id": 2}).json()
        assert answer["result"]["tenant"]["id"] == tenant

        output.read_for(0.5)
        text_fields = access_line_fields(output.text, "quick-start-text", text=True)
        assert stop(proc, output) == 0
    for port in ports.values():
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
    assert not [p for p in psutil.process_iter(["cmdline"])
                if str(data_dir) in " ".join(p.info["cmdline"] or [])], "something still runs"
    assert not list((state / "flexdb" / "instances").glob("*.json"))

    # Started again, not on a terminal: the same data, no new key, JSON log lines with the
    # same fields as the readable ones.
    with quick_start(data_dir, state, terminal=False) as (proc, output, ports):
        end = output.read_until(BLOCK_END, timeout=120)
        block = output.text[output.text.rindex("flexdb is running"):end.end()]
        assert key_in(block) is None and "create-key --admin" in block
        before = [line for line in output.text[:end.start()].splitlines()
                  if line.strip() and not line.startswith(("flexdb is running", "  "))]
        assert before and all(line.startswith("{") for line in before), before
        rpc = f"http://127.0.0.1:{ports['FLEXDB_PORT']}"
        answer = httpx.post(rpc + "/jsonrpc", timeout=10, headers={
            "Authorization": f"Bearer {key}", "X-Request-ID": "quick-start-json"}, json={
            "jsonrpc": "2.0", "method": "list_tenants", "params": {}, "id": 3}).json()
        assert answer["result"]["pagination"]["total_count"] == 1
        output.read_for(0.5)
        json_fields = access_line_fields(output.text, "quick-start-json", text=False)
        assert stop(proc, output) == 0
    common = {"ts", "level", "logger", "message"}
    assert set(text_fields) == set(json_fields) - common
