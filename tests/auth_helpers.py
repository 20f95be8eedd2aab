"""Helpers shared by the authentication and permission tests: a World (a tenant with one user
per role and objects of every kind) and new users with a key."""
from __future__ import annotations

from .conftest import unique

ROLES = ["viewer", "member", "admin", "owner"]
RANK = {r: i for i, r in enumerate(ROLES)}
TRIVIAL_PIPELINE = "def run(input, db):\n    return input\n"
# A webhook URL that never resolves (RFC 2606): accepted, and nothing is ever sent.
WEBHOOK_URL = "https://webhook.invalid/hook"


async def new_user(admin) -> tuple[dict, str]:
    user = (await admin.call("create_user", {"email": f"{unique('u')}@example.com",
                                             "display_name": "U"}))["user"]
    key = await admin.call("create_api_key", {"name": "test", "user_id": user["id"]})
    return user, key["secret"]


class World:
    """A tenant with one user per role, a node type, nodes and a relationship."""

    @classmethod
    async def build(cls, admin) -> "World":
        w = cls()
        w.admin = admin
        w.tenant = (await admin.call("create_tenant", {"slug": unique("w"), "name": "W"}))["tenant"]
        w.tid = w.tenant["id"]
        w.users, w.keys = {}, {}
        for role in ROLES:
            user, key = await new_user(admin)
            await admin.call("add_user_to_tenant", {"tenant_id": w.tid, "user_id": user["id"],
                                                    "role": role})
            w.users[role], w.keys[role] = user, key
        created = await admin.call("create_node_type", {"tenant_id": w.tid, "name": "N"})
        w.nt = created["node_type"]
        return w

    async def node(self) -> dict:
        return (await self.admin.call("create_node", {"tenant_id": self.tid,
                                                      "node_type_id": self.nt["id"]}))["node"]

    async def relationship(self) -> dict:
        a, b = await self.node(), await self.node()
        return (await self.admin.call("create_relationship", {
            "tenant_id": self.tid, "source_node_id": a["id"], "target_node_id": b["id"],
            "relationship_type": "r"}))["relationship"]

    async def member(self, role="viewer") -> dict:
        user, _ = await new_user(self.admin)
        await self.admin.call("add_user_to_tenant", {"tenant_id": self.tid, "user_id": user["id"],
                                                     "role": role})
        return user

    async def params(self, method: str, caller_role: str | None) -> dict:
        """Valid params for `method` on this world's objects (fresh ones where it changes them)."""
        t = self.tid
        if method == "create_tenant":
            return {"slug": unique("c"), "name": "C"}
        if method in ("list_tenants", "list_users", "list_api_keys", "list_denied_calls"):
            return {}
        if method == "get_user":
            return {"id": self.users[caller_role or "viewer"]["id"]}
        if method == "create_api_key":
            return {"name": "more"}
        if method == "revoke_api_key":
            return {"id": "00000000-0000-0000-0000-000000000000"}
        if method == "create_user":
            return {"email": f"{unique('n')}@example.com", "display_name": "N"}
        if method in ("update_user", "delete_user"):
            user, _ = await new_user(self.admin)
            return {"id": user["id"], **({"display_name": "X"} if method == "update_user" else {})}
        if method == "get_tenant":
            return {"id": t}
        if method == "update_tenant":
            return {"id": t, "name": "renamed"}
        if method == "delete_tenant":
            return {"id": t}
        if method in ("list_tenant_users", "get_tenant_usage"):
            return {"tenant_id": t}
        if method == "add_user_to_tenant":
            user, _ = await new_user(self.admin)
            return {"tenant_id": t, "user_id": user["id"], "role": "viewer"}
        if method in ("remove_user_from_tenant", "get_tenant_user"):
            return {"tenant_id": t, "user_id": (await self.member())["id"]}
        if method == "update_tenant_user_role":
            return {"tenant_id": t, "user_id": (await self.member())["id"], "role": "member"}
        if method in ("get_node_type", "delete_node_type"):
            nt = self.nt if method == "get_node_type" else (await self.admin.call(
                "create_node_type", {"tenant_id": t, "name": unique("D")}))["node_type"]
            return {"tenant_id": t, "id": nt["id"]}
        if method == "list_node_types":
            return {"tenant_id": t}
        if method == "create_node_type":
            return {"tenant_id": t, "name": unique("T")}
        if method == "update_node_type":
            return {"tenant_id": t, "id": self.nt["id"], "description": "d"}
        if method == "check_node_type_schema":
            return {"tenant_id": t, "id": self.nt["id"], "schema": {"type": "object"}}
        if method == "list_node_type_versions":
            return {"tenant_id": t, "id": self.nt["id"]}
        if method in ("get_node", "update_node", "delete_node"):
            node = await self.node()
            data = {"data": {"x": 1}} if method == "update_node" else {}
            return {"tenant_id": t, "id": node["id"], **data}
        if method == "list_nodes":
            return {"tenant_id": t}
        if method == "create_node":
            return {"tenant_id": t, "node_type_id": self.nt["id"], "data": {}}
        if method == "create_nodes":
            return {"tenant_id": t, "nodes": [{"node_type_id": self.nt["id"]}]}
        if method in ("get_relationship", "update_relationship", "delete_relationship"):
            rel = await self.relationship()
            extra = {"relationship_type": "s"} if method == "update_relationship" else {}
            return {"tenant_id": t, "id": rel["id"], **extra}
        if method in ("list_relationships", "list_audit_events", "verify_audit_chain",
                      "list_changes"):
            return {"tenant_id": t}
        if method in ("create_relationship", "create_relationships"):
            a, b = await self.node(), await self.node()
            item = {"source_node_id": a["id"], "target_node_id": b["id"], "relationship_type": "r"}
            return {"tenant_id": t, **item} if method == "create_relationship" else \
                {"tenant_id": t, "relationships": [item]}
        if method == "execute_query":
            return {"tenant_id": t, "sql": "SELECT count(*) FROM nodes"}
        if method == "query_nodes":
            return {"tenant_id": t, "filter": {"field": "data.x", "op": "exists"}}
        if method == "traverse":
            return {"tenant_id": t, "start_node_id": (await self.node())["id"]}
        if method == "shortest_path":
            a, b = await self.node(), await self.node()
            return {"tenant_id": t, "source_node_id": a["id"], "target_node_id": b["id"]}
        if method == "create_pipeline":
            return {"tenant_id": t, "name": unique("p"), "code": TRIVIAL_PIPELINE}
        if method in ("get_pipeline", "update_pipeline", "delete_pipeline", "run_pipeline"):
            pipeline = await self.pipeline()
            if method == "run_pipeline":
                return {"tenant_id": t, "pipeline_id": pipeline["id"], "input": 1}
            extra = {"description": "d"} if method == "update_pipeline" else {}
            return {"tenant_id": t, "id": pipeline["id"], **extra}
        if method in ("list_pipelines", "list_pipeline_runs"):
            return {"tenant_id": t}
        if method in ("get_pipeline_run", "cancel_pipeline_run"):
            run = await self.admin.call("run_pipeline", {
                "tenant_id": t, "pipeline_id": (await self.pipeline())["id"], "wait": False})
            return {"tenant_id": t, "id": run["run"]["id"]}
        if method in ("create_webhook", "list_webhooks"):
            return {"tenant_id": t, **({"url": WEBHOOK_URL} if method == "create_webhook" else {})}
        if method in ("get_webhook", "update_webhook", "delete_webhook"):
            extra = {"description": "d"} if method == "update_webhook" else {}
            return {"tenant_id": t, "id": (await self.webhook())["id"], **extra}
        if method in ("list_webhook_deliveries", "redeliver"):
            hook = await self.webhook()
            extra = {"position": hook["delivered_position"]} if method == "redeliver" else {}
            return {"tenant_id": t, "webhook_id": hook["id"], **extra}
        if method == "migrate_nodes":
            return {"tenant_id": t, "node_type_id": self.nt["id"],
                    "pipeline_id": (await self.pipeline())["id"], "to_version": 1}
        if method in ("get_job", "cancel_job"):  # (a job of the tenant's, or not found)
            return {"tenant_id": t, "id": "00000000-0000-0000-0000-000000000000"}
        if method == "list_jobs":
            return {"tenant_id": t}
        raise AssertionError(f"no params for {method}: add it to World.params")

    async def webhook(self) -> dict:
        return (await self.admin.call("create_webhook", {
            "tenant_id": self.tid, "url": WEBHOOK_URL}))["webhook"]

    async def pipeline(self) -> dict:
        return (await self.admin.call("create_pipeline", {
            "tenant_id": self.tid, "name": unique("p"), "code": TRIVIAL_PIPELINE}))["pipeline"]
