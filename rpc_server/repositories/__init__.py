"""asyncpg SQL, one repository per entity. Nothing outside this package writes SQL."""
from .node_types import NodeTypeRepository
from .nodes import NodeRepository
from .relationships import RelationshipRepository
from .tenants import TenantRepository
from .users import UserRepository

__all__ = ["NodeRepository", "NodeTypeRepository", "RelationshipRepository",
           "TenantRepository", "UserRepository"]
