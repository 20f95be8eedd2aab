"""Turn database rows into the flex-db result shapes.

UUIDs and timestamps stay Python objects here; the response serializer (orjson) writes
them as strings (RFC 3339 for timestamps). Documents read as JSON text (`data::text`, see
Repository.read_columns) go into the response as they are (orjson.Fragment), without
being parsed and encoded again; in the string mode they are compacted as before."""
from __future__ import annotations

import functools
from typing import Any, Iterable, Mapping

import asyncpg
import orjson

from rpc_server.storage.pagination import BUDGET_COLUMNS, SORT_KEY_COLUMN, TOTAL_COLUMN, Page

JSON_FIELDS = ("data", "schema")
# columns a read adds that are not the item's
LEFT_OUT = (SORT_KEY_COLUMN, TOTAL_COLUMN, *BUDGET_COLUMNS)


@functools.lru_cache(maxsize=256)  # (keys: the column lists of our statements, a few dozen)
def record_layout(columns: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """For the rows of a statement with these columns: (the item's columns, those that
    hold JSON text), found once per statement, not per row or page; None unless the
    columns left out (LEFT_OUT) come last."""
    kept = tuple(c for c in columns if c not in LEFT_OUT)
    if columns[:len(kept)] != kept:
        return None
    return kept, tuple(c for c in JSON_FIELDS if c in kept)


class Shaper:
    """Knows the configured JSON-fields mode: objects, or strings for older flex-db clients."""

    def __init__(self, json_fields: str = "object"):
        self.as_strings = json_fields == "string"

    def one(self, row: asyncpg.Record | Mapping[str, Any]) -> dict:
        item = dict(row)
        for column in LEFT_OUT:  # (a page's total rides on each row, and so on)
            item.pop(column, None)
        for key in JSON_FIELDS:
            if key not in item:
                continue
            value = item[key]
            if self.as_strings:
                if isinstance(value, str):  # JSON text from the database
                    value = orjson.loads(value)
                item[key] = "" if value is None else orjson.dumps(value).decode()
            elif isinstance(value, str):
                item[key] = orjson.Fragment(value)
        return item

    def many(self, rows: Iterable[asyncpg.Record | Mapping[str, Any]]) -> list[dict]:
        rows = rows if isinstance(rows, list) else list(rows)
        if self.as_strings or not rows:
            return [self.one(r) for r in rows]
        fragment = orjson.Fragment
        if type(rows[0]) is asyncpg.Record and (
                layout := record_layout(tuple(rows[0].keys()))) is not None:
            # The rows of one statement share their columns, those left out last (added to
            # a read's own): a Record's values paired with the names before them cost a
            # third less than dict(row), which looks each name up.
            kept, texts = layout
            items = [dict(zip(kept, row)) for row in rows]
        else:  # (dicts, whose keys may differ from row to row: a fused ranking's)
            texts = JSON_FIELDS
            items = [dict(row) for row in rows]
            for item in items:
                for column in LEFT_OUT:
                    item.pop(column, None)
        for item in items:
            for column in texts:
                value = item.get(column)
                if type(value) is str:  # JSON text from the database
                    item[column] = fragment(value)
        return items

    def page(self, key: str, page: Page) -> dict:
        pagination: dict[str, Any] = {"next_page_token": page.next_page_token}
        if page.total_count is not None:
            pagination["total_count"] = page.total_count
        return {key: self.many(page.rows), "pagination": pagination}
