"""Seeded random params for every method: whatever arrives, the answer is HTTP 200 and, per
call, invalid params naming the fields at fault, or a result from a method none of whose
params is required; never -32603 or any other error."""
from __future__ import annotations

import random

import pytest

from rpc_server.api.registry import REGISTRY
from rpc_server.methods import tenants  # noqa: F401  (registers methods)

NASTY = [
    None, True, False, 0, -1, 1, 2**31, 2**63 - 1, -(2**63), 1.5, -0.0, 1e308,
    "", " ", "a", "x" * 5000, "\u0000", "\ud7ff", "é\u202e", "<script>", "'; DROP TABLE nodes; --",
    "00000000-0000-0000-0000-000000000000", "{}", "[]", '{"a": 1}', "null", "{", "[1,2]",
    [], [1], [None], {}, {"a": None}, {"$ref": "#"}, {"type": "nope"}, {"pattern": "(a)\\1"},
    {"page_size": 0}, {"page_size": 10**9}, {"page_token": "garbage"},
]
FIELDS = ["id", "tenant_id", "user_id", "node_type_id", "source_node_id", "target_node_id",
          "slug", "name", "email", "display_name", "status", "role", "description", "schema",
          "data", "relationship_type", "expected_version", "pagination", "nodes",
          "relationships"]


def random_params(rng: random.Random, spec) -> dict | list:
    names = [f.alias or n for n, f in spec.params_model.model_fields.items()]
    if rng.random() < 0.15:
        return [rng.choice(NASTY) for _ in range(rng.randint(0, len(names) + 1))]
    params = {}
    for name in rng.sample(names + FIELDS, k=rng.randint(0, len(names) + 2)):
        value = rng.choice(NASTY)
        if name in ("nodes", "relationships") and rng.random() < 0.5:
            value = [{k: rng.choice(NASTY) for k in rng.sample(FIELDS, 3)}
                     for _ in range(rng.randint(0, 3))]
        params[name] = value
    return params


@pytest.mark.parametrize("seed", range(4))
async def test_random_params_never_cause_internal_errors(http, seed):
    rng = random.Random(seed)
    batch = []
    for i, name in enumerate(sorted(REGISTRY) * 3):
        batch.append({"jsonrpc": "2.0", "method": name,
                      "params": random_params(rng, REGISTRY[name]), "id": i})
    for start in range(0, len(batch), 100):
        chunk = batch[start:start + 100]
        r = await http.post("/jsonrpc", json=chunk)
        assert r.status_code == 200
        for request, reply in zip(chunk, r.json()):
            assert reply["id"] == request["id"]
            assert_invalid_params_or_a_result(REGISTRY[request["method"]], reply)


def assert_invalid_params_or_a_result(spec, reply: dict) -> None:
    if "result" in reply:
        # Nothing required, so random values may all be acceptable (or left out).
        assert not any(f.is_required() for f in spec.params_model.model_fields.values()), reply
        return
    error = reply["error"]
    if error["code"] == -32001:  # random values that happened to be valid: a missing id
        assert error["data"]["type"] == "not_found" and error["data"].get("id"), reply
        return
    assert error["code"] == -32602 and error["data"]["type"] == "invalid_params", reply
    assert error["data"]["errors"], reply  # each refusal says which field and why
    for entry in error["data"]["errors"]:
        assert isinstance(entry["field"], str) and entry["message"], reply
