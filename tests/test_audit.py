"""The audit trail: one event per committed change, none for a failed one, append-only in
the database, hash-chained per tenant so tampering is found."""
from __future__ import annotations

import asyncio
import base64
import json
import signal
import uuid
from datetime import datetime, timezone

import asyncpg
import pytest

from rpc_server.client import Conflict, FlexDBClient, InvalidParams, NotFound

from .auth_helpers import World, new_user
from .conftest import running_server
from .pipeline_helpers import make_pipeline, run

PLATFORM = "00000000-0000-0000-0000-000000000000"


async def events(rpc, tenant_id, **filters) -> list[dict]:
    result = await rpc.call("list_audit_events", {"tenant_id": tenant_id, **filters,
                                                  "pagination": {"page_size": 1000}})
    return result["audit_events"]


async def test_each_change_has_one_event_with_actor_target_and_request_id(server, rpc):
    world = await World.build(rpc)
    member = world.users["member"]
    async with FlexDBClient(server.url, api_key=world.keys["member"],
                            headers={"X-Request-ID": "audit-probe-42"}) as m:
        node = (await m.call("create_node", {"tenant_id": world.tid, "node_type_id": world.nt["id"],
                                             "data": {"secret_plan": "x" * 50}}))["node"]
        await m.call("update_node", {"tenant_id": world.tid, "id": node["id"], "data": {"v": 2}})
        await m.call("get_node", {"tenant_id": world.tid, "id": node["id"]})  # reads: no event
        await m.call("delete_node", {"tenant_id": world.tid, "id": node["id"]})
    mine = await events(rpc, world.tid, actor=member["id"])
    assert [e["method"] for e in mine] == ["create_node", "update_node", "delete_node"]
    for event in mine:
        assert event["target_kind"] == "node" and event["target_id"] == node["id"]
        assert event["outcome"] == "ok" and event["request_id"] == "audit-probe-42"
        assert event["actor_user_id"] == member["id"] and event["actor_key_id"]
        assert "x" * 50 not in str(event["summary"])  # documents are reduced to their size
    assert mine[0]["summary"]["data"] == "<dict 1 keys>"
    by_target = await events(rpc, world.tid, target_id=node["id"], method="update_node")
    assert [e["id"] for e in by_target] == [mine[1]["id"]]


async def test_a_failed_change_leaves_no_event(rpc):
    world = await World.build(rpc)
    typed = (await rpc.call("create_node_type", {"tenant_id": world.tid, "name": "Typed",
                                                 "schema": {"required": ["a"]}}))["node_type"]
    before = len(await events(rpc, world.tid))
    with pytest.raises(InvalidParams):
        await rpc.call("create_node", {"tenant_id": world.tid, "node_type_id": typed["id"]})
    node = await world.node()
    with pytest.raises(Conflict):
        await rpc.call("update_node", {"tenant_id": world.tid, "id": node["id"], "data": {},
                                       "expected_version": 7})
    after = await events(rpc, world.tid)
    assert [e["method"] for e in after[before:]] == ["create_node"]  # only world.node()


async def test_secrets_never_reach_the_trail(rpc):
    user, _ = await new_user(rpc)
    created = await rpc.call("create_api_key", {"name": "ci", "user_id": user["id"]})
    trail = await events(rpc, PLATFORM, target_id=created["api_key"]["id"])
    assert [e["method"] for e in trail] == ["create_api_key"]
    assert created["secret"] not in str(trail)


async def stored_summaries(database_url, tenant_id: str) -> str:
    """Every summary text the database holds for the tenant, chained or still pending."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT summary FROM audit_events WHERE tenant_id = $1 UNION ALL "
                                "SELECT summary FROM audit_pending WHERE tenant_id = $1",
                                uuid.UUID(tenant_id))
    finally:
        await conn.close()
    return "\n".join(r["summary"] for r in rows)


async def test_nested_secrets_in_pipeline_input_never_reach_the_trail(rpc, database_url):
    world = await World.build(rpc)
    pipeline = await make_pipeline(rpc, world.tid)
    secrets = [f"s3cret-{i}-{uuid.uuid4().hex}" for i in range(8)]
    run_input = {
        "db_password": secrets[0],
        "accounts": [{"name": "kept-name", "headers": {"X-Api-Key": secrets[1],
                                                       "Cookie": secrets[2]}}],
        "auth": {"Authorization": f"Bearer {secrets[3]}", "refresh-token": secrets[4],
                 "levels": [[{"PRIVATE_KEY": secrets[5]}]]},
        "Credentials": {"user": "u", "pass": secrets[6]},  # the whole object is a secret
        "access_token": secrets[7],
    }
    await run(rpc, world.tid, pipeline["id"], run_input)
    [event] = await events(rpc, world.tid, method="run_pipeline")
    listed, stored = json.dumps(event), await stored_summaries(database_url, world.tid)
    for secret in secrets:
        assert secret not in listed and secret not in stored
    summary = event["summary"]["input"]
    assert summary["db_password"] == summary["access_token"] == "[redacted]"
    assert summary["accounts"] == [{"name": "kept-name", "headers": {
        "X-Api-Key": "[redacted]", "Cookie": "[redacted]"}}]  # what is no secret is kept
    assert summary["auth"]["levels"] == [[{"PRIVATE_KEY": "[redacted]"}]]
    assert summary["Credentials"] == "[redacted]"



async def summary_of_run(rpc, database_url, run_input) -> tuple[dict, str]:
    """The run's audit summary as listed, and every summary text stored for its tenant."""
    world = await World.build(rpc)
    pipeline = await make_pipeline(rpc, world.tid)
    await run(rpc, world.tid, pipeline["id"], run_input)
    [event] = await events(rpc, world.tid, method="run_pipeline")
    stored = await stored_summaries(database_url, world.tid)
    return event, stored


def base64url_json(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def fake_jwt() -> str:
    part = base64url_json
    return f"{part({'alg': 'HS256'})}.{part({'sub': uuid.uuid4().hex})}.{uuid.uuid4().hex}"


@pytest.mark.parametrize("shape", ["name_value_pair", "header_list", "basic", "api_key",
                                   "url_password", "jwt", "json_string", "fullwidth_key",
                                   "upper_case_schemes"])
async def test_secrets_in_values_pairs_json_text_and_folded_keys_never_reach_the_trail(
        rpc, database_url, shape):
    secret = f"s3cret{uuid.uuid4().hex}"
    jwt = fake_jwt()
    basic = base64.b64encode(f"app:{secret}".encode()).decode()
    run_input = {
        "name_value_pair": {"env": [{"name": "DB_PASSWORD", "value": secret}]},
        "header_list": {"headers": [["Authorization", f"Bearer fdb_{secret}"]]},
        "basic": {"sent": [f"Basic {basic}"]},
        "api_key": {"note": f"use fdb_{secret} for this"},
        "url_password": {"dsn": f"postgresql://app:{secret}@db.internal:5432/prod"},
        "jwt": {"session": jwt},
        "json_string": json.dumps({"password": secret, "n": 1}),
        "fullwidth_key": {"ｐａｓｓｗｏｒｄ": secret},
        # (a value is screened for the patterns' marks first: in any case, as they match)
        "upper_case_schemes": {"sent": [f"BEARER {secret}", f"bAsIc {basic}"]},
    }[shape]
    event, stored = await summary_of_run(rpc, database_url, run_input)
    if shape == "upper_case_schemes":
        assert basic not in json.dumps(event, ensure_ascii=False) and basic not in stored
    secret = {"jwt": jwt, "basic": basic}.get(shape, secret)
    assert secret not in json.dumps(event, ensure_ascii=False) and secret not in stored
    assert "[redacted]" in stored  # redacted, not dropped by some other rule
    if shape == "url_password":  # the URL stays readable without its password
        assert event["summary"]["input"]["dsn"] == \
            "postgresql://app:[redacted]@db.internal:5432/prod"
    if shape == "json_string":  # parsed and summarised like an object
        assert event["summary"]["input"] == {"password": "[redacted]", "n": 1}


async def test_ordinary_values_stay_readable(rpc, database_url):
    run_input = {"env": [{"name": "LOG_LEVEL", "value": "debug"}],
                 "headers": [["Accept", "application/json"]],
                 "links": ["https://example.com/docs?page=2", "postgresql://app@db:5432/x"],
                 "sentence": "Basically, a token of thanks: basic courtesy.",
                 "version": "1.2.3", "text": "{not json", "ｎａｍｅ": "kept"}
    event, _ = await summary_of_run(rpc, database_url, run_input)
    assert event["summary"]["input"] == run_input

async def test_large_params_are_kept_as_their_size(rpc, database_url):
    world = await World.build(rpc)
    pipeline = await make_pipeline(rpc, world.tid)
    marker = uuid.uuid4().hex
    run_input = {"text": marker * 400, "rows": list(range(5000)),
                 "wide": {f"{marker}-{i}": i for i in range(2000)},
                 "many": [{f"{marker}-{i}-{j}": "v" * 150 for j in range(40)} for i in range(40)]}
    await run(rpc, world.tid, pipeline["id"], run_input)
    [event] = await events(rpc, world.tid, method="run_pipeline")
    summary = event["summary"]["input"]
    assert summary["text"] == "<str 12,800 chars>"
    assert summary["rows"] == "<list 5,000 items>"
    assert summary["wide"] == "<dict 2,000 keys>"
    assert len(await stored_summaries(database_url, world.tid)) < 6000  # bounded in total
    assert json.dumps(summary["many"]).endswith('more items>"]')


async def test_the_database_refuses_to_change_or_delete_events(rpc, database_url):
    world = await World.build(rpc)
    conn = await asyncpg.connect(database_url)
    try:
        for sql in ("UPDATE audit_events SET method = 'x' WHERE tenant_id = $1",
                    "DELETE FROM audit_events WHERE tenant_id = $1"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await conn.execute(sql, uuid.UUID(world.tid))
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute("TRUNCATE audit_events")
    finally:
        await conn.close()
    assert (await rpc.call("verify_audit_chain", {"tenant_id": world.tid}))["ok"] is True


@pytest.mark.parametrize("tamper", ["edit", "delete", "delete_last", "reorder"])
async def test_tampering_is_found(rpc, database_url, tamper):
    world = await World.build(rpc)
    for _ in range(3):
        await world.node()
    trail = await events(rpc, world.tid)
    ok = await rpc.call("verify_audit_chain", {"tenant_id": world.tid})
    assert ok == {"ok": True, "events_checked": len(trail)}
    victim = trail[2]
    tid = uuid.UUID(world.tid)
    conn = await asyncpg.connect(database_url)  # a superuser, able to switch the guard off
    try:
        await conn.execute("ALTER TABLE audit_events DISABLE TRIGGER USER")
        try:
            if tamper == "edit":
                await conn.execute("UPDATE audit_events SET summary = '{}' WHERE tenant_id = $1 "
                                   "AND seq = $2", tid, victim["seq"])
            elif tamper == "delete":
                await conn.execute("DELETE FROM audit_events WHERE tenant_id = $1 AND seq = $2",
                                   tid, victim["seq"])
            elif tamper == "delete_last":
                await conn.execute("DELETE FROM audit_events WHERE tenant_id = $1 AND seq = $2",
                                   tid, trail[-1]["seq"])
            else:  # move an event earlier in time: the hash covers created_at
                await conn.execute("UPDATE audit_events SET created_at = created_at - interval "
                                   "'1 hour' WHERE tenant_id = $1 AND seq = $2", tid, victim["seq"])
        finally:
            await conn.execute("ALTER TABLE audit_events ENABLE TRIGGER USER")
    finally:
        await conn.close()
    result = await rpc.call("verify_audit_chain", {"tenant_id": world.tid})
    assert result["ok"] is False
    expected = trail[-1]["seq"] if tamper == "delete_last" else victim["seq"]
    assert result["first_broken_seq"] == expected, result


async def test_parallel_writers_keep_a_valid_chain(server, rpc):
    world = await World.build(rpc)
    async with FlexDBClient(server.url, api_key=world.keys["member"]) as a, \
            FlexDBClient(server.url, api_key=world.keys["owner"]) as b:
        calls = [c.call("create_node", {"tenant_id": world.tid, "node_type_id": world.nt["id"],
                                        "data": {"i": i}})
                 for i in range(40) for c in (a, b)]
        await asyncio.gather(*calls)
    trail = await events(rpc, world.tid)
    assert [e["seq"] for e in trail] == sorted(e["seq"] for e in trail)
    assert sorted(e["seq"] for e in trail) == list(range(1, len(trail) + 1))
    assert sum(e["method"] == "create_node" for e in trail) == 80
    assert (await rpc.call("verify_audit_chain", {"tenant_id": world.tid}))["ok"] is True


async def test_time_filters(rpc):
    world = await World.build(rpc)
    cut = datetime.now(timezone.utc).isoformat()
    await world.node()
    later = await events(rpc, world.tid, since=cut)
    earlier = await events(rpc, world.tid, until=cut)
    assert [e["method"] for e in later] == ["create_node"]
    assert later[0]["id"] not in {e["id"] for e in earlier} and earlier


async def test_two_servers_writing_one_tenant_keep_one_valid_chain(database_url, rpc):
    """Both servers chain the tenant's events (the chain head is the lock between them)."""
    world = await World.build(rpc)
    with running_server({"FLEXDB_DATABASE_URL": database_url}) as first, \
            running_server({"FLEXDB_DATABASE_URL": database_url}) as second:
        clients = [FlexDBClient(s.url, api_key=world.keys["member"]) for s in (first, second)]
        try:
            await asyncio.gather(*(c.call("create_node", {
                "tenant_id": world.tid, "node_type_id": world.nt["id"], "data": {"i": i}})
                for i in range(60) for c in clients))
        finally:
            for c in clients:
                await c.aclose()
    trail = await events(rpc, world.tid)
    assert [e["seq"] for e in trail] == list(range(1, len(trail) + 1))
    assert sum(e["method"] == "create_node" for e in trail) == 120
    assert (await rpc.call("verify_audit_chain", {"tenant_id": world.tid}))["ok"] is True


async def test_events_a_killed_server_left_pending_are_chained_by_another(database_url, rpc):
    """An event is recorded in the change's transaction; if the server dies before it chains
    it, any other server's sweep (or a reader) chains it: no committed change loses its
    event."""
    world = await World.build(rpc)
    with running_server({"FLEXDB_DATABASE_URL": database_url}) as doomed:
        async with FlexDBClient(doomed.url, api_key=world.keys["member"]) as c:
            created = await asyncio.gather(*(c.call("create_node", {
                "tenant_id": world.tid, "node_type_id": world.nt["id"], "data": {"i": i}})
                for i in range(30)))
        doomed.proc.send_signal(signal.SIGKILL)
        doomed.proc.wait()
    # What a server killed between commit and chaining leaves behind: a pending event. The
    # running server's sweep chains it within a second or two, with no reader asking.
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO audit_pending (tenant_id, id, created_at, method, target_kind, "
            "target_id, outcome, request_id, summary) VALUES ($1, $2, now(), 'create_node', "
            "'node', 'left-behind', 'ok', 'crashed', '{}')", uuid.UUID(world.tid), uuid.uuid4())
        for _ in range(50):
            if not await conn.fetchval("SELECT count(*) FROM audit_pending WHERE tenant_id = $1",
                                       uuid.UUID(world.tid)):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the sweep did not chain the pending event")
    finally:
        await conn.close()
    trail = await events(rpc, world.tid, method="create_node")
    assert {e["target_id"] for e in trail} == {n["node"]["id"] for n in created} | {"left-behind"}
    assert (await rpc.call("verify_audit_chain", {"tenant_id": world.tid}))["ok"] is True


async def test_the_trail_of_a_deleted_tenant_answers_not_found(rpc):
    """Like every tenant-scoped read; the events stay in the (append-only) table."""
    world = await World.build(rpc)
    await world.node()
    assert await events(rpc, world.tid)
    await rpc.call("delete_tenant", {"id": world.tid})
    for method in ("list_audit_events", "verify_audit_chain"):
        with pytest.raises(NotFound) as gone:
            await rpc.call(method, {"tenant_id": world.tid})
        assert gone.value.data["kind"] == "tenant"
    assert (await rpc.call("verify_audit_chain", {"tenant_id": PLATFORM}))["ok"] is True


@pytest.mark.parametrize("seq", ["²", "9" * 19, "-1", "1e3", ""])
async def test_crafted_audit_page_tokens_are_invalid_params(rpc, seq):
    world = await World.build(rpc)
    raw = json.dumps(["audit_events", seq, str(uuid.uuid4())]).encode()
    token = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    with pytest.raises(InvalidParams):
        await rpc.call("list_audit_events", {"tenant_id": world.tid,
                                             "pagination": {"page_token": token}})
