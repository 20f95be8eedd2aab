"""Params of vector similarity search: a node type's `embedding` declaration
(create_node_type, update_node_type) and query_nodes' `near` clause."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, StrictInt, field_validator

from rpc_server.api.params import Params
from rpc_server.storage.node_filter import MAX_PATH_SEGMENTS, MAX_SEGMENT_LENGTH
from rpc_server.storage.vectors import MAX_DIMENSIONS
from rpc_server.validation.embeddings import vector_problem

MAX_K = 1000  # nearest nodes one near clause asks for
Metric = Literal["cosine", "l2", "inner"]
EMBEDDING_FIELD_PATTERN = r"^data(\.[^.\s]+)+$"


def _data_path(value: str) -> str:
    keys = value.split(".")[1:]
    if len(keys) > MAX_PATH_SEGMENTS:
        raise ValueError(f"paths have at most {MAX_PATH_SEGMENTS} keys")
    if any(len(k) > MAX_SEGMENT_LENGTH or "\x00" in k for k in keys):
        raise ValueError(f"path keys are 1-{MAX_SEGMENT_LENGTH} characters")
    return value


EmbeddingField = Annotated[str, Field(
    pattern=EMBEDDING_FIELD_PATTERN, max_length=1 + (MAX_SEGMENT_LENGTH + 1) * MAX_PATH_SEGMENTS,
    description="A path inside the node's data, e.g. \"data.embedding\" (keys without dots)."),
    AfterValidator(_data_path)]


class Embedding(Params):
    """A node type's embedding: nodes of the type carry, at `field`, an array of exactly
    `dimensions` finite numbers (or nothing there: absent or null, then the node is not
    among k-NN results). Needs pgvector on the server's database."""
    field: EmbeddingField
    dimensions: StrictInt = Field(ge=1, le=MAX_DIMENSIONS)
    metrics: list[Metric] = Field(
        default_factory=lambda: list[Metric](["cosine"]), min_length=1, max_length=3,
        description="The metrics the type's HNSW indexes are built for (one index each); a "
                    "`near` search with another metric is exact (a scan of the type).")

    @field_validator("metrics")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each metric at most once")
        return value

    def stored(self) -> dict:
        return {"field": self.field, "dimensions": self.dimensions, "metrics": self.metrics}


def _vector(value: list[Any]) -> list[Any]:
    problem = vector_problem(value, len(value))
    if problem is not None:
        raise ValueError(problem.replace(" (the node type's embedding)", ""))
    return value


class Near(Params):
    """query_nodes' k-nearest-neighbour clause: the `k` nodes of `node_type_id` whose
    embedding at `field` (the type's declared one) is nearest to `vector`, among those the
    filter matches, nearest first, each with its `distance` (cosine: 1 - cosine similarity;
    l2: Euclidean distance; inner: the negative inner product). One page of k: no
    page_token, no sort."""
    field: EmbeddingField
    vector: Annotated[list[Any], AfterValidator(_vector)] = Field(
        min_length=1, max_length=MAX_DIMENSIONS,
        description="As many finite numbers as the type's embedding has dimensions.")
    k: StrictInt = Field(10, ge=1, le=MAX_K)
    metric: Metric = "cosine"
