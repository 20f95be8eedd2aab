"""The sandbox worker's HTTP API (sandbox_worker/), called directly with no server between:
only a properly signed job runs, and only once; unsigned, forged, replayed or stale requests
and jobs without their db methods are refused; /health tells nothing secret."""
from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest

import rpc_server.methods  # noqa: F401  (registers every method)
from rpc_server.api.registry import run_db_methods
from sandbox_worker import signing

from .conftest import TEST_SANDBOX_SECRET

# ---------------------------------------------------------------- 7. the worker's HTTP API

def _job(code: str = "def run(input, db):\n    return 7\n", **fields) -> bytes:
    job = {"run_id": str(uuid.uuid4()), "tenant_id": str(uuid.uuid4()),
           "token": "fdbx_not-a-real-token", "code": code, "input": None,
           "timeout_ms": 2000, "memory_mb": 64, "db_methods": run_db_methods(), **fields}
    return json.dumps({k: v for k, v in job.items() if v is not None}).encode()


def _headers(body: bytes, secret: str = TEST_SANDBOX_SECRET, path: str = "/runs",
             timestamp: str | None = None) -> dict:
    if timestamp is None:
        return signing.sign(secret.encode(), "POST", path, body)
    nonce = uuid.uuid4().hex
    return {signing.TIMESTAMP: timestamp, signing.NONCE: nonce,
            signing.SIGNATURE: signing._mac(secret.encode(), "POST", path, timestamp, nonce, body)}


@pytest.fixture
async def worker(server):
    async with httpx.AsyncClient(base_url=server.sandbox.base, timeout=30) as client:
        yield client


async def test_worker_runs_a_properly_signed_job_once(worker):
    body = _job()
    headers = _headers(body)
    first = await worker.post("/runs", content=body, headers=headers)
    assert first.status_code == 200 and first.json()["result"] == 7
    replay = await worker.post("/runs", content=body, headers=headers)
    assert replay.status_code == 401 and replay.text == "replayed request"


MAPPED = ("def run(input, db):\n"
          "    if input == 0:\n"
          "        raise ValueError('zero')\n"
          "    if input == 1:\n"
          "        return 2 ** 70\n"
          "    print('item', input)\n"
          "    return {'double': input * 2}\n")


async def test_a_map_job_runs_each_item_in_one_process_with_its_own_outcome(worker):
    """Map mode (jobs' batches): run() once per item of a list input; each item's result
    or error on its own; the output and the limits are the whole batch's."""
    body = _job(MAPPED, input=[3, 0, 1, 5], map=True)
    answer = await worker.post("/runs", content=body, headers=_headers(body))
    outcome = answer.json()
    assert answer.status_code == 200 and outcome["status"] == "succeeded", outcome
    assert outcome["result"] == [
        {"result": {"double": 6}},
        {"error": {"type": "exception", "message": "ValueError: zero"}},
        {"error": {"type": "result_not_storable",
                   "message": "the result holds an integer beyond 64 bits (return it as a "
                              "string)"}},
        {"result": {"double": 10}}]
    assert outcome["output"] == "item 3\nitem 5\n"

    spin = "def run(input, db):\n    while input:\n        pass\n"
    body = _job(spin, input=[0, 1], map=True, timeout_ms=500)
    answer = (await worker.post("/runs", content=body, headers=_headers(body))).json()
    assert answer["status"] == "timed_out"  # one item over the clock ends the batch

    body = _job(MAPPED, input=5, map=True)
    answer = (await worker.post("/runs", content=body, headers=_headers(body))).json()
    assert answer["status"] == "failed" and "must be a list" in answer["error"]["message"]


@pytest.mark.parametrize("db_methods", [None, ["get_node"], {"get_node": "id"},
                                        {"get_node": [1]}])
async def test_worker_refuses_a_job_without_its_db_methods(worker, db_methods):
    """The worker keeps no list of db methods: a signed job that does not say which the
    run's db offers (method -> params by position) is a bad job, not a run with a guess."""
    body = _job(db_methods=db_methods)
    refused = await worker.post("/runs", content=body, headers=_headers(body))
    assert refused.status_code == 400 and refused.text == "bad job"


UNSIGNED = [
    ("no_headers", lambda body: {}, "unsigned request"),
    ("signature_only", lambda body: {signing.SIGNATURE: _headers(body)[signing.SIGNATURE]},
     "unsigned request"),
    ("wrong_secret", lambda body: _headers(body, secret="another-secret-0123456789abcdef01234"),
     "bad signature"),
    ("zero_signature", lambda body: {**_headers(body), signing.SIGNATURE: "0" * 64},
     "bad signature"),
    ("other_path", lambda body: _headers(body, path="/runs/x/cancel"), "bad signature"),
    ("tampered_body", lambda body: _headers(body.replace(b"return 7", b"return 8")),
     "bad signature"),
    ("stale", lambda body: _headers(body, timestamp=f"{time.time() - 120:.3f}"),
     "stale or future timestamp"),
    ("future", lambda body: _headers(body, timestamp=f"{time.time() + 120:.3f}"),
     "stale or future timestamp"),
    ("infinite", lambda body: _headers(body, timestamp="inf"), "bad timestamp"),
    ("not_a_number", lambda body: _headers(body, timestamp="yesterday"), "bad timestamp"),
    ("long_nonce", lambda body: {**_headers(body), signing.NONCE: "n" * 65}, "unsigned request"),
]


@pytest.mark.parametrize("make_headers,message", [c[1:] for c in UNSIGNED],
                         ids=[c[0] for c in UNSIGNED])
async def test_worker_refuses_unsigned_or_forged_requests(worker, make_headers, message):
    body = _job("def run(input, db):\n    return 7\n")
    response = await worker.post("/runs", content=body, headers=make_headers(body))
    assert response.status_code == 401, response.text
    assert response.text == message


async def test_worker_refuses_unsigned_cancel(worker):
    response = await worker.post(f"/runs/{uuid.uuid4()}/cancel", content=b"{}")
    assert response.status_code == 401


async def test_worker_health_tells_nothing_secret(worker):
    response = await worker.get("/health")
    assert response.status_code == 200
    assert set(response.json()) == {"status", "running", "warm"}


async def test_worker_refuses_nan_timestamp(worker):
    body = _job()
    response = await worker.post("/runs", content=body, headers=_headers(body, timestamp="nan"))
    assert response.status_code == 401
