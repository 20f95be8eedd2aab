"""Values in and out of execute_query.

In: JSON params are fitted to the types PostgreSQL inferred for $1..$n (a string for a
uuid or timestamp, a number for numeric, any JSON for jsonb).
Out: every value PostgreSQL can return becomes plain JSON, documented in the README:
uuid, inet and other scalar types as text, timestamps in RFC 3339, numeric as a number when
a float holds it exactly (else as text), bytea as "\\x<hex>", intervals in seconds, arrays
and composites as lists, ranges as objects, jsonb as itself."""
from __future__ import annotations

import math
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any
from uuid import UUID

import asyncpg
import orjson
from asyncpg.pgproto.types import BitString, Path

INT_TYPES = {"int2", "int4", "int8", "oid"}
FLOAT_TYPES = {"float4", "float8"}
TEXT_TYPES = {"text", "varchar", "bpchar", "name", "unknown", "char", "citext"}


# numeric holds up to 131072 digits before the point and 16383 after it.
NUMERIC_MAX_EXPONENT, NUMERIC_MIN_EXPONENT = 131072, -16383
PG_SPECIAL_FLOATS = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


class ParamError(ValueError):
    pass


def type_name(pg_type) -> str:
    """asyncpg calls int4[] '_int4'; callers read 'int4[]'."""
    name = pg_type.name
    return name[1:] + "[]" if name.startswith("_") else name


def _scalar_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return orjson.dumps(value).decode()
    raise ParamError("must be a string or a number for a text parameter")


def _timestamp(value: Any, with_zone: bool) -> datetime:
    if not isinstance(value, str):
        raise ParamError("must be an ISO 8601 timestamp string")
    try:
        parsed = datetime.fromisoformat(value)
        if with_zone and parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        if parsed.tzinfo is not None:  # asyncpg sends it in UTC: it must fit there too
            parsed = parsed.astimezone(timezone.utc)
        return parsed if with_zone else parsed.replace(tzinfo=None)
    except (ValueError, OverflowError):
        raise ParamError("must be an ISO 8601 timestamp string within years 1-9999") from None


def _coerce(value: Any, name: str) -> Any:
    if value is None:
        return None
    if name.endswith("[]"):
        if not isinstance(value, list):
            raise ParamError(f"must be a list for a {name} parameter")
        return [_coerce(v, name[:-2]) for v in value]
    if name in ("json", "jsonb"):
        return value
    if name == "bool":
        if not isinstance(value, bool):
            raise ParamError("must be true or false")
        return value
    if name in INT_TYPES:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamError(f"must be an integer for a {name} parameter")
        return value
    if name in FLOAT_TYPES:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamError(f"must be a number for a {name} parameter")
        return float(value)
    if name == "numeric":
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ParamError("must be a number (or a string holding one)")
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            raise ParamError("must be a number (or a string holding one)") from None
        if number.is_finite() and not NUMERIC_MIN_EXPONENT <= number.adjusted() \
                < NUMERIC_MAX_EXPONENT:
            raise ParamError("is outside the range of PostgreSQL's numeric")
        return number
    if name == "uuid":
        try:
            return UUID(_string(value, "a UUID string"))
        except ValueError:
            raise ParamError("must be a UUID string") from None
    if name in ("timestamptz", "timestamp"):
        return _timestamp(value, name == "timestamptz")
    if name == "date":
        try:
            return date.fromisoformat(_string(value, "an ISO 8601 date string"))
        except ValueError:
            raise ParamError("must be an ISO 8601 date string") from None
    if name == "bytea":
        if not isinstance(value, str) or not value.startswith("\\x"):
            raise ParamError("must be a string of the form \\x<hex>")
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            raise ParamError("must be a string of the form \\x<hex>") from None
    if name in TEXT_TYPES:
        return _scalar_text(value)
    raise ParamError(f"parameters of type {name} are not supported: cast it in SQL, "
                     f"e.g. $1::text::{name}")


def _string(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ParamError(f"must be {what}")
    return value


def coerce_params(values: list, pg_types) -> list:
    """Fit each JSON value to its parameter type; ParamError names the position."""
    if len(values) != len(pg_types):
        raise ParamError(f"the statement has {len(pg_types)} parameter(s) ($1..${len(pg_types)})"
                         f" but {len(values)} were given")
    out = []
    for index, (value, pg_type) in enumerate(zip(values, pg_types)):
        try:
            out.append(_coerce(value, type_name(pg_type)))
        except ParamError as exc:
            raise ParamError(f"params.{index}: {exc}") from None
    return out


def _number(value: Decimal) -> Any:
    if not value.is_finite():
        return str(value)
    if value == value.to_integral_value() and abs(value) < 2**63:
        return int(value)
    as_float = float(value)
    return as_float if Decimal(repr(as_float)) == value else str(value)


def json_safe(value: Any) -> Any:
    """A value from asyncpg as plain JSON (see the module doc)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else PG_SPECIAL_FLOATS[str(value)]
    if isinstance(value, Decimal):
        return _number(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\x" + bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, asyncpg.Record)):
        return [json_safe(v) for v in value]
    if isinstance(value, Path):  # path and polygon
        return {"points": [json_safe(p) for p in value.points], "closed": value.is_closed}
    if isinstance(value, asyncpg.Range):
        return {"lower": json_safe(value.lower), "upper": json_safe(value.upper),
                "lower_inc": value.lower_inc, "upper_inc": value.upper_inc,
                "empty": value.isempty}
    if isinstance(value, BitString):
        return value.as_string()
    text = str(value)  # uuid, inet, cidr, macaddr, ...
    # Never an object's default repr (it carries a memory address).
    return f"<{type(value).__name__}>" if " object at 0x" in text else text
