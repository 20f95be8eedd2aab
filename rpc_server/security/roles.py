"""Roles in a tenant, from least to most: what each may do is declared with each method
(api/registry.py); this is only their order."""

ROLE_RANK = {"viewer": 1, "member": 2, "admin": 3, "owner": 4}
