"""asyncpg SQL, one repository per entity. Nothing outside this package writes SQL."""
from rpc_server.storage.repositories.embeddings import EmbeddingRepository
from rpc_server.storage.repositories.node_types import NodeTypeRepository
from rpc_server.storage.repositories.nodes import NodeRepository
from rpc_server.storage.repositories.relationships import RelationshipRepository
from rpc_server.storage.repositories.tenants import TenantRepository
from rpc_server.storage.repositories.users import UserRepository

__all__ = ["EmbeddingRepository", "NodeRepository", "NodeTypeRepository", "RelationshipRepository",
           "TenantRepository", "UserRepository"]
