"""Request and response models, derived from the models the RPC handlers use (no copy to
drift): a body is a method's params minus what the URL carries; a response is the
method's declared result model."""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query
from pydantic import BaseModel, create_model

from rpc_server import methods  # noqa: F401  (registers every method)
from rpc_server.api.params import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, MAX_PAGE_TOKEN, Params
from rpc_server.api.registry import REGISTRY


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def body_of(method: str, *, exclude: tuple[str, ...] = (), name: str | None = None
            ) -> type[Params]:
    """The params model of `method` without the fields the URL carries.

    A route module binds each to a name twice: the real model for FastAPI (which reads the
    annotation at run time to validate and document the body), and, under TYPE_CHECKING,
    Params for mypy, which cannot use a class made at run time as a type. Declaring the
    models as classes would copy every method's fields here, to drift from the RPC's."""
    source = REGISTRY[method].params_model
    fields: dict[str, Any] = {n: (info.annotation, info)
                              for n, info in source.model_fields.items() if n not in exclude}
    model = create_model(name or _camel(method) + "Body", __base__=Params, **fields)
    model.__doc__ = REGISTRY[method].summary or None
    return model


def result_of(method: str) -> type[BaseModel]:
    return REGISTRY[method].result_model


def paging(page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
           page_token: Annotated[str, Query(max_length=MAX_PAGE_TOKEN)] = "",
           include_total: bool = True) -> dict:
    """List pages: `page_token` is the previous page's `pagination.next_page_token`."""
    return {"page_size": page_size, "page_token": page_token, "include_total": include_total}


def wire(body: BaseModel) -> dict:
    """A validated body as JSON-RPC params: wire names, only what the caller sent."""
    return body.model_dump(mode="json", by_alias=True, exclude_unset=True)

