"""The `flexdb` command: settings validation, migrations (lock, checksums), serve."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest

from .cli_helpers import flexdb
from .conftest import ROOT, free_port, fresh_database


@pytest.mark.parametrize("var,value,expected", [
    ("FLEXDB_PORT", "not-a-port", "FLEXDB_PORT"),
    ("FLEXDB_PORT", "70000", "FLEXDB_PORT"),
    ("FLEXDB_JSON_FIELDS", "xml", "FLEXDB_JSON_FIELDS"),
    ("FLEXDB_DATABASE_URL", "mysql://secret-password@host/db", "FLEXDB_DATABASE_URL"),
    ("FLEXDB_DB_POOL_MAX", "0", "FLEXDB_DB_POOL_MAX"),
])
def test_invalid_settings_stop_the_start_with_a_clear_message(var, value, expected):
    result = flexdb("serve", env={var: value})
    assert result.returncode == 2
    assert expected in result.stderr
    assert value not in result.stderr  # the message names the setting, never its value


def test_pool_min_above_max_is_refused():
    result = flexdb("migrate", env={"FLEXDB_DB_POOL_MIN": "20", "FLEXDB_DB_POOL_MAX": "5"})
    assert result.returncode == 2 and "FLEXDB_DB_POOL_MIN" in result.stderr


@pytest.fixture
def scratch_db(pg_server_url):
    with fresh_database(pg_server_url) as url:
        yield url


@pytest.fixture
def migrations_copy(tmp_path):
    target = tmp_path / "sql"
    shutil.copytree(ROOT / "sql", target)
    return target


def test_migrate_applies_once_and_records_checksums(scratch_db, migrations_copy):
    env = {"FLEXDB_DATABASE_URL": scratch_db, "FLEXDB_MIGRATIONS_DIR": str(migrations_copy)}
    first = flexdb("migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert "0001_core.sql" in first.stdout
    second = flexdb("migrate", env=env)
    assert second.returncode == 0 and "up to date" in second.stdout


def test_changed_applied_migration_is_an_error(scratch_db, migrations_copy):
    env = {"FLEXDB_DATABASE_URL": scratch_db, "FLEXDB_MIGRATIONS_DIR": str(migrations_copy)}
    assert flexdb("migrate", env=env).returncode == 0
    core = migrations_copy / "0001_core.sql"
    core.write_text(core.read_text() + "\n-- edited after the fact\n")
    result = flexdb("migrate", env=env)
    assert result.returncode == 1
    assert "0001_core.sql was changed after it was applied" in result.stderr
    serve = flexdb("serve", env={**env, "FLEXDB_PORT": "5999"})
    assert serve.returncode == 1 and "changed after it was applied" in serve.stderr


def test_new_migration_file_is_applied_later(scratch_db, migrations_copy):
    env = {"FLEXDB_DATABASE_URL": scratch_db, "FLEXDB_MIGRATIONS_DIR": str(migrations_copy)}
    assert flexdb("migrate", env=env).returncode == 0
    (migrations_copy / "9998_extra.sql").write_text("CREATE TABLE extra_probe (id int);")
    result = flexdb("migrate", env=env)
    assert result.returncode == 0 and "9998_extra.sql" in result.stdout


def test_concurrent_migrators_do_not_race(scratch_db, migrations_copy):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEXDB_")}
    env.update({"FLEXDB_DATABASE_URL": scratch_db, "FLEXDB_MIGRATIONS_DIR": str(migrations_copy)})
    procs = [subprocess.Popen([sys.executable, "-m", "rpc_server", "migrate"], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    applied = [out for out, _ in outputs if "0001_core.sql" in out]
    assert len(applied) == 1  # exactly one process applied it; the others found it done

    async def count():
        conn = await asyncpg.connect(scratch_db)
        try:
            return await conn.fetchval("SELECT count(*) FROM schema_migrations "
                                       "WHERE filename = '0001_core.sql'")
        finally:
            await conn.close()

    import asyncio
    assert asyncio.run(count()) == 1


def test_bad_migration_file_name_is_refused(scratch_db, migrations_copy):
    (migrations_copy / "fix.sql").write_text("SELECT 1;")
    result = flexdb("migrate", env={"FLEXDB_DATABASE_URL": scratch_db,
                                    "FLEXDB_MIGRATIONS_DIR": str(migrations_copy)})
    assert result.returncode == 1 and "fix.sql" in result.stderr


def test_failed_migration_leaves_nothing_half_applied(scratch_db, migrations_copy):
    env = {"FLEXDB_DATABASE_URL": scratch_db, "FLEXDB_MIGRATIONS_DIR": str(migrations_copy)}
    (migrations_copy / "9999_broken.sql").write_text(
        "CREATE TABLE half_done (id int);\nTHIS IS NOT SQL;")
    result = flexdb("migrate", env=env)
    assert result.returncode != 0

    async def check():
        conn = await asyncpg.connect(scratch_db)
        try:
            names = [r[0] for r in await conn.fetch("SELECT filename FROM schema_migrations")]
            half = await conn.fetchval("SELECT to_regclass('half_done')")
            return names, half
        finally:
            await conn.close()

    import asyncio
    names, half = asyncio.run(check())
    assert names == sorted(p.name for p in (ROOT / "sql").glob("*.sql")) and half is None


def test_unreachable_database_is_a_clear_error_without_the_password():
    result = flexdb("migrate", env={
        "FLEXDB_DATABASE_URL": "postgresql://postgres:hunter2secret@127.0.0.1:1/flexdb",
        "FLEXDB_DB_CONNECT_TIMEOUT_S": "2"})
    assert result.returncode == 1
    assert "cannot use the database at 127.0.0.1:1/flexdb" in result.stderr
    assert "hunter2secret" not in result.stderr and "Traceback" not in result.stderr


def encrypt(value: str, master: str) -> str:
    result = subprocess.run([sys.executable, "-m", "rpc_server", "encrypt-value"], input=value,
                            env={**os.environ, "FLEXDB_MASTER_KEY": master}, cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ENC(") and value not in result.stdout
    return result.stdout.strip()


def new_master_key() -> str:
    result = flexdb("encrypt-value", "--new-key")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_an_encrypted_setting_is_decrypted_at_start(scratch_db, tmp_path):
    master = new_master_key()
    sealed = encrypt(scratch_db, master)
    result = flexdb("migrate", env={"FLEXDB_DATABASE_URL": sealed, "FLEXDB_MASTER_KEY": master})
    assert result.returncode == 0, result.stderr
    assert "0001_core.sql" in result.stdout
    # The key may also come from a file (e.g. a mounted secret).
    key_file = tmp_path / "master.key"
    key_file.write_text(master + "\n")
    result = flexdb("migrate", env={"FLEXDB_DATABASE_URL": sealed,
                                    "FLEXDB_MASTER_KEY_FILE": str(key_file)})
    assert result.returncode == 0 and "up to date" in result.stdout, result.stderr


@pytest.mark.parametrize("case", ["wrong key", "damaged value", "no key", "bad key",
                                  "unreadable key file"])
def test_a_setting_that_cannot_be_decrypted_stops_the_start(case, tmp_path):
    master = new_master_key()
    secret_value = "postgresql://admin:hunter2-secret@db.example/flexdb"
    sealed = encrypt(secret_value, master)
    env = {"FLEXDB_DATABASE_URL": sealed, "FLEXDB_MASTER_KEY": master}
    if case == "wrong key":
        env["FLEXDB_MASTER_KEY"] = new_master_key()
    elif case == "damaged value":
        env["FLEXDB_DATABASE_URL"] = sealed[:40] + ("A" if sealed[40] != "A" else "B") + sealed[41:]
    elif case == "no key":
        del env["FLEXDB_MASTER_KEY"]
    elif case == "bad key":
        env["FLEXDB_MASTER_KEY"] = "not-a-fernet-key"
    else:
        del env["FLEXDB_MASTER_KEY"]
        env["FLEXDB_MASTER_KEY_FILE"] = str(tmp_path / "missing.key")
    result = flexdb("serve", env=env)
    assert result.returncode == 2, result.stderr
    expected = {"wrong key": "FLEXDB_DATABASE_URL", "damaged value": "FLEXDB_DATABASE_URL",
                "no key": "FLEXDB_MASTER_KEY", "bad key": "FLEXDB_MASTER_KEY",
                "unreadable key file": "FLEXDB_MASTER_KEY_FILE"}[case]
    assert expected in result.stderr
    for secret in (secret_value, "hunter2", master, sealed[4:-1]):
        assert secret not in result.stderr and secret not in result.stdout


def test_encrypt_value_needs_a_master_key():
    result = flexdb("encrypt-value")
    assert result.returncode == 2 and "FLEXDB_MASTER_KEY" in result.stderr


def test_version_is_the_installed_one():
    from importlib.metadata import version
    result = flexdb("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"flexdb {version('flexdb')}"


@pytest.mark.parametrize("command", ["up", "serve", "facade", "sandbox", "migrate", "create-key"])
def test_every_command_help_lists_its_flags_and_the_settings_it_reads(command):
    from rpc_server.cli import FLAGS
    from rpc_server.config import Settings, env_var, settings_read_by, shown_default
    result = flexdb(command, "--help")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for flag in FLAGS[command]:
        assert flag in text
    read = list(Settings.model_fields) if command == "up" else settings_read_by(command)
    for name in Settings.model_fields:
        line = f"{env_var(name)}  (default: {shown_default(name).replace('`', '')})"
        assert (line in text) == (name in read), (command, name)


def test_help_says_what_each_command_reads():
    """Spot checks of the declarations: a command lists what it uses, not the others'."""
    serve = flexdb("serve", "--help").stdout
    facade = flexdb("facade", "--help").stdout
    sandbox = flexdb("sandbox", "--help").stdout
    assert "FLEXDB_PORT  (default: 5000)" in serve and "FLEXDB_PORT " not in facade
    assert "FLEXDB_FACADE_PORT  (default: 8000)" in facade
    assert "FLEXDB_SANDBOX_MAX_RUNNING  (default: 4)" in sandbox
    assert "FLEXDB_DATABASE_URL" not in sandbox and "FLEXDB_DATABASE_URL" in serve
    assert "FLEXDB_WORKERS  (default: usable cores, at most 4" in serve


def test_flags_win_over_the_environment(scratch_db):
    # A broken URL in the environment, the real one as a flag: the flag is used.
    result = flexdb("migrate", "--database-url", scratch_db,
                    env={"FLEXDB_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
                         "FLEXDB_DB_CONNECT_TIMEOUT_S": "2"})
    assert result.returncode == 0, result.stderr
    assert "0001_core.sql" in result.stdout
    # A bad flag is named as the flag; the environment's valid value does not hide it.
    result = flexdb("serve", "--port", "70000", env={"FLEXDB_PORT": "5000"})
    assert result.returncode == 2 and "--port" in result.stderr


def test_serve_listens_where_the_flags_say(database_url):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEXDB_")}
    env.update(FLEXDB_DATABASE_URL=database_url, FLEXDB_PORT="1", FLEXDB_HOST="0.0.0.0",
               FLEXDB_SECRET_KEY="s" * 40)
    proc = subprocess.Popen([sys.executable, "-m", "rpc_server", "serve", "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
                break
            except httpx.TransportError:
                assert proc.poll() is None, "serve exited"
                time.sleep(0.1)
        else:
            raise AssertionError("serve did not listen on the --port given")
        listening = {c.laddr for c in psutil.Process(proc.pid).net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN}
        assert listening == {("127.0.0.1", port)}  # --host won over FLEXDB_HOST=0.0.0.0
        assert len(psutil.Process(proc.pid).children()) == 0  # --workers 1: no workers
    finally:
        proc.terminate()
        proc.wait(30)


def create_key(cwd: Path, state: Path, *args: str, **env: str):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FLEXDB_")}
    full_env.update(XDG_STATE_HOME=str(state), **env)
    return subprocess.run([sys.executable, "-m", "rpc_server", "create-key", "--admin", *args],
                          env=full_env, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_create_key_elsewhere_creates_nothing_and_says_where_it_looked(tmp_path):
    cwd, state = tmp_path / "somewhere", tmp_path / "state"
    cwd.mkdir()
    result = create_key(cwd, state)
    assert result.returncode == 2 and result.stdout == ""
    assert str(cwd / ".flexdb") in result.stderr and "no running quick start" in result.stderr
    assert "--data-dir" in result.stderr and "--database-url" in result.stderr
    assert list(cwd.iterdir()) == []  # no database, no secret
    # A data dir named explicitly that holds no database: refused, left empty.
    empty = tmp_path / "empty"
    empty.mkdir()
    result = create_key(cwd, state, "--data-dir", str(empty))
    assert result.returncode == 2 and f"{empty} holds no flexdb database" in result.stderr
    assert list(empty.iterdir()) == []
    result = create_key(cwd, state, FLEXDB_DATA_DIR=str(empty))
    assert result.returncode == 2 and list(empty.iterdir()) == []


def test_create_key_with_a_database_url_needs_the_servers_secret(scratch_db, tmp_path):
    cwd = tmp_path / "somewhere"
    cwd.mkdir()
    result = create_key(cwd, tmp_path / "state", "--database-url", scratch_db)
    assert result.returncode == 2 and "FLEXDB_SECRET_KEY" in result.stderr
    assert list(cwd.iterdir()) == []  # no secret invented that the server would not know
    result = create_key(cwd, tmp_path / "state", "--database-url", scratch_db,
                        FLEXDB_SECRET_KEY="k" * 40)
    assert result.returncode == 0 and result.stdout.startswith("fdb_"), result.stderr


def test_create_key_refuses_to_guess_between_two_running_quick_starts(tmp_path):
    from rpc_server.ops.local_instances import registered
    state = tmp_path / "state"
    first, second = tmp_path / "one", tmp_path / "two"
    for data_dir in (first, second):
        (data_dir / "pg").mkdir(parents=True)
    os.environ["XDG_STATE_HOME"] = str(state)  # the registry this process writes to
    try:
        with registered(first, "http://127.0.0.1:1/jsonrpc"), \
                registered(second, "http://127.0.0.1:2/jsonrpc"):
            result = create_key(tmp_path, state)
    finally:
        del os.environ["XDG_STATE_HOME"]
    assert result.returncode == 2 and "several quick starts" in result.stderr
    assert str(first) in result.stderr and str(second) in result.stderr
