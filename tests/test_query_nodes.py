"""query_nodes: the JSON filter language over data paths and node columns (every op, with
exact expected sets), and/or/not and exact complements, keyset pagination for every sort,
page-token binding, validation errors and their field paths, tenant isolation, and that
the GIN index on data answers the containment tests (EXPLAIN on the real statement)."""
from __future__ import annotations

import uuid
from datetime import timedelta, timezone

import pytest

from rpc_server.client import FlexDBClient, InvalidParams, NotFound, RpcError

from .conftest import error_fields, missing_id, unique
from .query_nodes_helpers import (
    ALL,
    DATASET,
    SECOND_TYPE,
    TOKEN,
    check_errors,
    error_field_of,
    leaf,
    query,
    ts,
)


async def test_dataset_is_stored_as_sent(rpc, ds):
    assert ds.nodes["B"]["data"]["n"] == 1.0 and isinstance(ds.nodes["B"]["data"]["n"], float)
    assert ds.nodes["C"]["version"] == 2
    assert await ds.match(rpc, None) == ALL
    assert await ds.match(rpc, {"and": [leaf("data.n", "exists")]}) == ALL - {"F"}


# ---------------------------------------------------------------- ops on data paths

def case(flt, expected: str, id=None):
    return pytest.param(flt, expected, id=id)


DATA_CASES = [
    # eq: scalars, numbers (1 == 1.0), strings vs numbers, booleans vs strings
    case(leaf("data.s", "eq", "apple"), "A", id="eq-string"),
    case(leaf("data.n", "eq", 1), "AB", id="eq-int-matches-1.0"),
    case(leaf("data.n", "eq", 1.0), "AB", id="eq-float-matches-1"),
    case(leaf("data.n", "eq", 100), "G", id="eq-number"),
    case(leaf("data.n", "eq", "5"), "E", id="eq-string-not-number"),
    case(leaf("data.s", "eq", 7), "E", id="eq-number-not-string"),
    case(leaf("data.s", "eq", "7"), "", id="eq-string-7-none"),
    case(leaf("data.flag", "eq", True), "AG", id="eq-true"),
    case(leaf("data.flag", "eq", "true"), "C", id="eq-string-true"),
    case(leaf("data.flag", "eq", False), "B", id="eq-false"),
    case(leaf("data.nul", "eq", 0), "C", id="eq-zero-not-false-or-null"),
    case(leaf("data.nul", "eq", False), "G", id="eq-false-not-zero"),
    case(leaf("data.nul", "eq", None), "B", id="eq-null"),
    case(leaf("data.n", "eq", None), "H", id="eq-null-2"),
    case(leaf("data.flag", "eq", None), "E", id="eq-null-3"),
    case(leaf("data.nosuch", "eq", None), "", id="eq-null-missing-path"),
    # eq: arrays (order matters), objects (key order does not, extra keys do)
    case(leaf("data.tags", "eq", ["red", "blue"]), "A", id="eq-array"),
    case(leaf("data.tags", "eq", ["blue", "red"]), "H", id="eq-array-order"),
    case(leaf("data.tags", "eq", ["blue"]), "B", id="eq-array-subset-is-not-equal"),
    case(leaf("data.tags", "eq", []), "C", id="eq-empty-array"),
    case(leaf("data.tags", "eq", "red"), "E", id="eq-scalar-not-array-element"),
    case(leaf("data.addr", "eq", {"city": "Bergen"}), "B", id="eq-object"),
    case(leaf("data.addr", "eq", {"city": "Oslo"}), "H", id="eq-object-exact"),
    case(leaf("data.addr", "eq", "Oslo"), "D", id="eq-string-not-object"),
    case(leaf("data.obj", "eq", {"q": [1, 2], "p": 1}), "AB", id="eq-object-key-order"),
    case(leaf("data.addr", "eq", {}), "", id="eq-empty-object"),
    case(leaf("data.addr.city", "eq", "Oslo"), "ACGH", id="eq-nested-path"),
    case(leaf("data.addr.geo.lat", "eq", 59), "G", id="eq-deep-path"),
    # paths with array indices, keys with dots (list form), the whole document
    case(leaf("data.tags.0", "eq", "red"), "AD", id="eq-index-0"),
    case(leaf("data.tags.1", "eq", "red"), "H", id="eq-index-1"),
    case(leaf("data.tags.0", "eq", "blue"), "BH", id="eq-index-0-blue"),
    case(leaf("data.tags.0.c", "eq", "red"), "G", id="eq-index-then-key"),
    case(leaf("data.tags.1.0", "eq", "nested"), "D", id="eq-index-index"),
    case(leaf(["data", "k.d"], "eq", "dotted"), "A", id="eq-dotted-key-list-form"),
    case(leaf("data.k.d", "eq", "nested"), "B", id="eq-dotted-string-is-nested-path"),
    case(leaf("data.k.d", "eq", "dotted"), "", id="eq-dotted-string-not-dotted-key"),
    case(leaf(["data", "k", "d"], "eq", "nested"), "B", id="eq-list-form-nested"),
    case(leaf("data", "eq", {}), "F", id="eq-whole-data-empty"),
    case(leaf("data", "eq", DATASET["D"]), "D", id="eq-whole-data"),
    case(leaf(["data"], "eq", DATASET["E"]), "E", id="eq-whole-data-list-form"),
    # ne: includes nodes missing the path and other types
    case(leaf("data.s", "ne", "apple"), "BCDEFGH", id="ne-string"),
    case(leaf("data.n", "ne", 1), "CDEFGH", id="ne-number-1.0"),
    case(leaf("data.flag", "ne", True), "BCDEFH", id="ne-true"),
    case(leaf("data.tags", "ne", ["blue"]), "ACDEFGH", id="ne-array"),
    case(leaf("data.nosuch", "ne", 1), "ABCDEFGH", id="ne-missing-path"),
    case(leaf("data.tags.1", "ne", "red"), "ABCDEFG", id="ne-index"),
    case(leaf("data", "ne", {}), "ABCDEGH", id="ne-whole-data"),
    case(leaf("data.nul", "ne", None), "ACDEFGH", id="ne-null"),
    # lt/lte/gt/gte: numbers with numbers only
    case(leaf("data.n", "lt", 2), "ABD", id="lt-number"),
    case(leaf("data.n", "lt", 1), "D", id="lt-number-strict"),
    case(leaf("data.n", "lte", 1), "ABD", id="lte-number"),
    case(leaf("data.n", "gt", 1), "CG", id="gt-number"),
    case(leaf("data.n", "gt", 1.5), "CG", id="gt-float"),
    case(leaf("data.n", "gte", 2.5), "CG", id="gte-number"),
    case(leaf("data.n", "gte", -100), "ABCDG", id="gte-all-numbers-only"),
    case(leaf("data.n", "lt", 1e300), "ABCDG", id="lt-huge"),
    case(leaf("data.s", "lt", 100), "E", id="lt-number-ignores-strings"),
    case(leaf("data.s", "gt", 5), "E", id="gt-number-ignores-strings"),
    # ... strings with strings only
    case(leaf("data.n", "lt", "9"), "E", id="lt-string-ignores-numbers"),
    case(leaf("data.s", "lt", "apple"), "DH", id="lt-string"),
    case(leaf("data.s", "lte", "apple"), "ADH", id="lte-string"),
    case(leaf("data.s", "gt", "apple"), "BCG", id="gt-string"),
    case(leaf("data.s", "gte", "apple"), "ABCG", id="gte-string"),
    case(leaf("data.s", "gt", "b"), "BC", id="gt-string-b"),
    case(leaf("data.s", "gte", ""), "ABCDGH", id="gte-empty-string-all-strings"),
    # ... never other JSON types (booleans, null, arrays, objects)
    case(leaf("data.flag", "lt", 5), "", id="lt-booleans-never"),
    case(leaf("data.flag", "gte", ""), "C", id="gte-only-string-flag"),
    case(leaf("data.tags", "gt", 0), "", id="gt-arrays-never"),
    case(leaf("data.tags", "gte", ""), "E", id="gte-string-tags-only"),
    case(leaf("data.addr", "gt", ""), "D", id="gt-objects-never"),
    case(leaf("data.nul", "gte", 0), "C", id="gte-zero-not-false-or-null"),
    case(leaf("data.tags.0", "gte", "r"), "AD", id="gte-index-path"),
    case(leaf("data.nosuch", "lt", 1), "", id="lt-missing-path"),
    # in
    case(leaf("data.s", "in", ["apple", "cherry", "nope"]), "AC", id="in-strings"),
    case(leaf("data.n", "in", [1, 100]), "ABG", id="in-numbers"),
    case(leaf("data.n", "in", ["5", 2.5]), "CE", id="in-mixed-types"),
    case(leaf("data.addr", "in", [{"city": "Bergen"}, "Oslo"]), "BD", id="in-objects"),
    case(leaf("data.nul", "in", [0, False]), "CG", id="in-zero-false"),
    case(leaf("data.tags.0", "in", ["red"]), "AD", id="in-index-path"),
    case(leaf("data.tags.0", "in", ["blue", "nope"]), "BH", id="in-index-path-2"),
    case(leaf("data", "in", [{}, DATASET["A"]]), "AF", id="in-whole-data"),
    case(leaf("data.nosuch", "in", [1, "x"]), "", id="in-missing-path"),
    case(leaf("data.tags", "in", [["blue"], []]), "BC", id="in-arrays"),
    case(leaf("data.tags", "in", [["blue", "red"], ["red", "blue"]]), "AH",
         id="in-arrays-same-length"),
    case(leaf("data.nul", "in", [None, 0]), "BC",
         id="in-null"),
    # contains: array element, sub-array, sub-object, nested path, whole document
    case(leaf("data.tags", "contains", "red"), "ADH", id="contains-element"),
    case(leaf("data.tags", "contains", ["red", "blue"]), "AH", id="contains-elements"),
    case(leaf("data.tags", "contains", ["blue"]), "ABH", id="contains-element-list"),
    case(leaf("data.tags", "contains", []), "ABCDGH", id="contains-empty-array-any-array"),
    case(leaf("data.tags", "contains", [["nested"]]), "D", id="contains-nested-array"),
    case(leaf("data.tags", "contains", [{"c": "red"}]), "G", id="contains-object-element"),
    case(leaf("data.tags", "contains", {"c": "red"}), "", id="contains-object-in-array-no"),
    case(leaf("data.addr", "contains", {"city": "Oslo"}), "ACGH", id="contains-sub-object"),
    case(leaf("data.addr", "contains", {"geo": {"lat": 59}}), "G", id="contains-deep"),
    case(leaf("data.addr.geo", "contains", {"lat": 59}), "G", id="contains-nested-path"),
    case(leaf("data.addr", "contains", {}), "ABCGH", id="contains-empty-object-any-object"),
    case(leaf("data.obj", "contains", {"q": [2]}), "ABD", id="contains-object-array"),
    case(leaf("data", "contains", {"addr": {"city": "Oslo"}, "flag": True}), "AG",
         id="contains-whole-data"),
    case(leaf("data.n", "contains", 1), "", id="contains-scalar-at-path-no"),
    case(leaf("data.tags", "contains", "r"), "", id="contains-not-substring"),
    case(leaf("data.tags.1", "contains", "nested"), "D", id="contains-index-path"),
    case(leaf("data.tags.0", "contains", {"c": "red"}), "G", id="contains-index-path-object"),
    case(leaf(["data", "k.d"], "contains", "dotted"), "", id="contains-string-no"),
    # exists (JSON null exists)
    case(leaf("data.nul", "exists", True), "BCG", id="exists-true-incl-null"),
    case(leaf("data.nul", "exists", False), "ADEFH", id="exists-false"),
    case({"field": "data.n", "op": "exists"}, "ABCDEGH", id="exists-default-true"),
    case(leaf("data.flag", "exists", True), "ABCEGH", id="exists-null-flag"),
    case(leaf("data.tags.1", "exists", True), "ADH", id="exists-index"),
    case(leaf("data.tags.5", "exists", True), "", id="exists-index-out-of-range"),
    case(leaf("data.addr.city", "exists", True), "ABCGH", id="exists-nested"),
    case(leaf(["data", "k.d"], "exists", True), "A", id="exists-dotted-key"),
    case(leaf("data", "exists", True), "ABCDEFGH", id="exists-whole-data"),
    case(leaf("data", "exists", False), "", id="exists-whole-data-false"),
    # prefix: strings only, value matched literally (no LIKE wildcards)
    case(leaf("data.s", "prefix", "app"), "AH", id="prefix"),
    case(leaf("data.s", "prefix", "apple"), "A", id="prefix-whole"),
    case(leaf("data.s", "prefix", ""), "ABCDGH", id="prefix-empty-all-strings"),
    case(leaf("data.s", "prefix", "7"), "", id="prefix-number-never"),
    case(leaf("data.pct", "prefix", "50%_"), "AC", id="prefix-literal-percent-underscore"),
    case(leaf("data.pct", "prefix", "50%"), "AC", id="prefix-literal-percent"),
    case(leaf("data.pct", "prefix", "5_"), "", id="prefix-literal-underscore"),
    case(leaf("data.pct", "prefix", "50"), "ABC", id="prefix-strings-only"),
    case(leaf("data.n", "prefix", "5"), "E", id="prefix-string-number"),
    case(leaf("data.addr", "prefix", "O"), "D", id="prefix-not-objects"),
    case(leaf("data.addr.city", "prefix", "o"), "", id="prefix-case-sensitive"),
    case(leaf("data.tags.0", "prefix", "bl"), "BH", id="prefix-index-path"),
    case(leaf(["data", "k.d"], "prefix", "dot"), "A", id="prefix-dotted-key"),
]


PASSING_CASES = DATA_CASES


def _group(param) -> str:
    return param.id.split("-")[0]


@pytest.mark.parametrize("group", sorted({_group(p) for p in PASSING_CASES}))
async def test_data_path_ops(rpc, ds, group):
    """Every case of the op group (ids in DATA_CASES), all failures reported together."""
    wrong = []
    for param in PASSING_CASES:
        if _group(param) == group:
            flt, expected = param.values
            got = await ds.match(rpc, flt)
            if got != set(expected):
                wrong.append(f"{param.id}: {flt} gave {''.join(sorted(got)) or '{}'}, "
                             f"expected {expected or '{}'}")
    assert not wrong, "\n".join(wrong)




@pytest.mark.parametrize("path", ["data.tags.-1", "data.tags.+1", ["data", "tags", " 1"]])
async def test_signed_array_index_eq_agrees_with_other_ops(rpc, ds, path):
    # The path resolves ("blue" is A's and B's last tag, A's tag 1) for gte/lte ...
    both = await ds.match(rpc, {"and": [leaf(path, "gte", "blue"), leaf(path, "lte", "blue")]})
    assert both
    # ... so eq and in must see the same nodes (eq and ne must cover every node).
    assert await ds.match(rpc, leaf(path, "eq", "blue")) == both
    assert await ds.match(rpc, leaf(path, "in", ["blue"])) == both
    assert await ds.match(rpc, leaf(path, "ne", "blue")) == ALL - both


EQ_PAIRS = [("data.s", "apple"), ("data.n", 1), ("data.n", "5"), ("data.tags", ["blue"]),
            ("data.addr", {"city": "Oslo"}), ("data.addr.city", "Oslo"), ("data.tags.0", "red"),
            (["data", "k.d"], "dotted"), ("data.nosuch", 1), ("data.nosuch.deeper", "x"),
            ("data", {}), ("data.flag", True)]


async def test_ne_is_exactly_not_eq(rpc, ds):
    for path, value in EQ_PAIRS:
        eq = await ds.match(rpc, leaf(path, "eq", value))
        ne = await ds.match(rpc, leaf(path, "ne", value))
        assert eq | ne == ALL and not eq & ne, (path, value)
        assert await ds.match(rpc, {"not": leaf(path, "eq", value)}) == ne, (path, value)


# ---------------------------------------------------------------- node columns

async def test_id_filters(rpc, ds):
    ids = ds.ids
    assert await ds.match(rpc, leaf("id", "eq", ids["A"])) == {"A"}
    assert await ds.match(rpc, leaf("id", "eq", ids["A"].upper())) == {"A"}
    assert await ds.match(rpc, leaf("id", "ne", ids["A"])) == ALL - {"A"}
    assert await ds.match(rpc, leaf("id", "in", [ids["B"], ids["H"], missing_id()])) == {"B", "H"}
    assert await ds.match(rpc, leaf("id", "eq", missing_id())) == set()
    # ids are ordered UUIDs: comparisons are allowed and consistent with the sort order
    ordered = sorted(ids.items(), key=lambda kv: kv[1])
    pivot_label, pivot = ordered[3]
    assert await ds.match(rpc, leaf("id", "gt", pivot)) == {label for label, _ in ordered[4:]}
    assert await ds.match(rpc, leaf("id", "lte", pivot)) == {label for label, _ in ordered[:4]}


async def test_node_type_id_filters(rpc, ds):
    assert await ds.match(rpc, leaf("node_type_id", "eq", ds.type2)) == SECOND_TYPE
    assert await ds.match(rpc, leaf("node_type_id", "ne", ds.type2)) == ALL - SECOND_TYPE
    assert await ds.match(rpc, leaf("node_type_id", "in", [ds.type1, ds.type2])) == ALL
    assert await ds.match(rpc, leaf("node_type_id", "in", [missing_id()])) == set()
    # the node_type_id parameter and a filter combine
    assert await ds.match(rpc, leaf("data.tags", "contains", "red"),
                          node_type_id=ds.type2) == {"H"}
    assert await ds.match(rpc, None, node_type_id=ds.type1) == ALL - SECOND_TYPE
    assert await ds.match(rpc, leaf("node_type_id", "eq", ds.type1),
                          node_type_id=ds.type2) == set()


@pytest.mark.parametrize("column", ["created_at", "updated_at"])
async def test_timestamp_filters(rpc, ds, column):
    times = {label: ts(n[column]) for label, n in ds.nodes.items()}
    pivot = times["D"]

    def where(pred):
        return {label for label, t in times.items() if pred(t)}

    text = ds.nodes["D"][column]
    assert await ds.match(rpc, leaf(column, "eq", text)) == where(lambda t: t == pivot)
    assert await ds.match(rpc, leaf(column, "ne", text)) == where(lambda t: t != pivot)
    assert await ds.match(rpc, leaf(column, "lt", text)) == where(lambda t: t < pivot)
    assert await ds.match(rpc, leaf(column, "lte", text)) == where(lambda t: t <= pivot)
    assert await ds.match(rpc, leaf(column, "gt", text)) == where(lambda t: t > pivot)
    assert await ds.match(rpc, leaf(column, "gte", text)) == where(lambda t: t >= pivot)
    assert await ds.match(rpc, leaf(column, "in", [text, ds.nodes["A"][column]])) == \
        where(lambda t: t in (pivot, times["A"]))
    # the same instant in other spellings: Z, another offset, naive (= UTC)
    utc = pivot.astimezone(timezone.utc)
    for spelling in (utc.isoformat().replace("+00:00", "Z"),
                     utc.astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat(),
                     utc.replace(tzinfo=None).isoformat()):
        assert await ds.match(rpc, leaf(column, "gte", spelling)) == \
            where(lambda t: t >= pivot), spelling
    assert await ds.match(rpc, leaf(column, "gt", "2000-01-01")) == ALL
    assert await ds.match(rpc, leaf(column, "lt", "2000-01-01T00:00:00+00:00")) == set()


async def test_created_at_before_update(rpc, ds):
    # C was updated after H was created: only its updated_at moved
    assert ts(ds.nodes["C"]["updated_at"]) > ts(ds.nodes["H"]["created_at"])
    h_created = ds.nodes["H"]["created_at"]
    assert await ds.match(rpc, leaf("updated_at", "gt", h_created)) == {"C"}
    assert await ds.match(rpc, leaf("created_at", "gt", h_created)) == set()


async def test_version_filters(rpc, ds):
    assert await ds.match(rpc, leaf("version", "eq", 2)) == {"C"}
    assert await ds.match(rpc, leaf("version", "ne", 1)) == {"C"}
    assert await ds.match(rpc, leaf("version", "gt", 1)) == {"C"}
    assert await ds.match(rpc, leaf("version", "lte", 1)) == ALL - {"C"}
    assert await ds.match(rpc, leaf("version", "gte", 1)) == ALL
    assert await ds.match(rpc, leaf("version", "in", [1, 3])) == ALL - {"C"}


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
async def test_timestamp_out_of_range_in_utc_is_invalid_params(rpc, ds, value):
    try:
        await ds.match(rpc, leaf("created_at", "gt", value))
    except InvalidParams as exc:
        assert exc.data["errors"][0]["field"] == "filter.value"
    except RpcError as exc:
        pytest.fail(f"{value}: {exc.code} {exc.message}")
    # answering (with every node or none) would also be acceptable


async def test_timestamp_extremes_that_fit_work(rpc, ds):
    assert await ds.match(rpc, leaf("created_at", "gt", "0001-01-01T00:00:00+00:00")) == ALL
    assert await ds.match(rpc, leaf("created_at", "lt", "9999-12-31T23:59:59+00:00")) == ALL


COLUMN_ERRORS = [
    (leaf("id", "prefix", "abc"), "filter.op"),
    (leaf("id", "contains", "abc"), "filter.op"),
    (leaf("created_at", "exists", True), "filter.op"),
    (leaf("version", "prefix", "1"), "filter.op"),
    (leaf("node_type_id", "contains", []), "filter.op"),
    (leaf("id", "eq", "not-a-uuid"), "filter.value"),
    (leaf("id", "eq", 5), "filter.value"),
    (leaf("id", "in", [str(uuid.uuid4()), "x"]), "filter.value.1"),
    (leaf("id", "in", []), "filter.value"),
    (leaf("node_type_id", "in", "x"), "filter.value"),
    (leaf("node_type_id", "eq", None), "filter.value"),
    (leaf("created_at", "gt", "yesterday"), "filter.value"),
    (leaf("created_at", "gt", 1700000000), "filter.value"),
    (leaf("updated_at", "lt", "2024-13-01"), "filter.value"),
    (leaf("version", "eq", "1"), "filter.value"),
    (leaf("version", "eq", 1.5), "filter.value"),
    (leaf("version", "eq", True), "filter.value"),
    (leaf("version", "eq", 2 ** 31), "filter.value"),
    (leaf("version", "in", [1, "2"]), "filter.value.1"),
]


async def test_column_filter_errors(rpc, ds):
    await check_errors(COLUMN_ERRORS, lambda f: query(rpc, ds.tenant_id, filter=f))


# ---------------------------------------------------------------- and / or / not

async def test_combinations(rpc, ds):
    red = leaf("data.tags", "contains", "red")
    oslo = leaf("data.addr.city", "eq", "Oslo")
    assert await ds.match(rpc, {"and": [red, oslo]}) == {"A", "H"}
    assert await ds.match(rpc, {"or": [red, oslo]}) == set("ACDGH")
    assert await ds.match(rpc, {"and": [oslo, {"not": red}]}) == {"C", "G"}
    assert await ds.match(rpc, {"or": [leaf("data.n", "eq", 100),
                                       leaf("data.s", "eq", "banana")]}) == {"B", "G"}
    assert await ds.match(rpc, {"not": leaf("data.s", "prefix", "a")}) == set("BCDEF")
    assert await ds.match(rpc, {"and": [red]}) == {"A", "D", "H"}
    assert await ds.match(rpc, {"or": [red]}) == {"A", "D", "H"}
    nested = {"or": [{"and": [leaf("node_type_id", "eq", ds.type2), {"not": red}]},
                     {"and": [leaf("data.n", "lt", 0), red]},
                     leaf("id", "eq", ds.ids["F"])]}
    assert await ds.match(rpc, nested) == {"G", "D", "F"}
    assert await ds.match(rpc, {"not": nested}) == ALL - {"G", "D", "F"}
    # contradictions and tautologies
    assert await ds.match(rpc, {"and": [red, {"not": red}]}) == set()
    assert await ds.match(rpc, {"or": [red, {"not": red}]}) == ALL


COMPLEMENT_CASES = [
    leaf("data.s", "eq", "apple"),
    leaf("data.nosuch", "eq", 1),
    leaf("data.nosuch", "ne", 1),
    leaf("data.n", "lt", 2),
    leaf("data.n", "gte", "0"),
    leaf("data.nosuch", "gt", 0),
    leaf("data.nul", "eq", None),
    leaf("data.nul", "exists", True),
    leaf("data.nosuch", "exists", False),
    leaf("data.tags", "contains", "red"),
    leaf("data.tags.0", "contains", "x"),
    leaf("data.tags.1", "eq", "red"),
    leaf("data.addr", "contains", {"city": "Oslo"}),
    leaf("data.addr.city.x", "eq", "Oslo"),
    leaf("data.n", "in", [1, "5", None]),
    leaf("data.s", "prefix", "a"),
    leaf(["data", "k.d"], "prefix", "d"),
    leaf("data", "eq", {}),
    leaf("version", "gt", 1),
    leaf("node_type_id", "eq", str(uuid.UUID(int=1))),
    {"or": [leaf("data.nosuch", "eq", 1), leaf("data.flag", "eq", True)]},
    {"and": [leaf("data.n", "gt", 0), leaf("data.nosuch", "ne", 1)]},
]


async def test_not_is_exact_complement(rpc, ds):
    for flt in COMPLEMENT_CASES:
        matched = await ds.match(rpc, flt)
        assert await ds.match(rpc, {"not": flt}) == ALL - matched, flt
        assert await ds.match(rpc, {"not": {"not": flt}}) == matched, flt


# ---------------------------------------------------------------- validation errors

def nested_not(depth: int) -> dict:
    node = leaf("data.a", "eq", 1)
    for _ in range(depth):
        node = {"not": node}
    return node


A1 = leaf("data.a", "eq", 1)

FILTER_ERRORS = [
    pytest.param(leaf("data.a", "like", "x"), "filter.op", id="unknown-op"),
    pytest.param(leaf("data.a", "EQ", 1), "filter.op", id="op-case"),
    pytest.param(leaf("data.a", None, 1), "filter.op", id="op-null"),
    pytest.param(leaf("name", "eq", 1), "filter.field", id="unknown-field"),
    pytest.param(leaf("tenant_id", "eq", str(uuid.uuid4())), "filter.field", id="tenant-field"),
    pytest.param(leaf("id.x", "eq", 1), "filter.field", id="column-with-path"),
    pytest.param(leaf("", "eq", 1), "filter.field", id="empty-field"),
    pytest.param(leaf([], "eq", 1), "filter.field", id="empty-list-field"),
    pytest.param(leaf(["data", 1], "eq", 1), "filter.field", id="non-string-key"),
    pytest.param(leaf(5, "eq", 1), "filter.field", id="numeric-field"),
    pytest.param(leaf("data..a", "eq", 1), "filter.field", id="empty-key"),
    pytest.param(leaf("data.", "eq", 1), "filter.field", id="trailing-dot"),
    pytest.param(leaf(["data", ""], "eq", 1), "filter.field", id="empty-key-list"),
    pytest.param(leaf(["data", "a\x00"], "eq", 1), "filter.field", id="nul-in-key"),
    pytest.param(leaf(["data", "k" * 257], "eq", 1), "filter.field", id="long-key"),
    pytest.param(leaf("data." + ".".join("k" * 17), "eq", 1), "filter.field", id="deep-path"),
    pytest.param({**A1, "extra": 1}, "filter", id="unknown-leaf-key"),
    pytest.param({"field": "data.a", "value": 1}, "filter", id="missing-op"),
    pytest.param({"op": "eq", "value": 1}, "filter", id="missing-field"),
    pytest.param({}, "filter", id="empty-object"),
    pytest.param({"field": "data.a", "op": "eq"}, "filter.value", id="missing-value"),
    pytest.param({"and": []}, "filter.and", id="empty-and"),
    pytest.param({"or": []}, "filter.or", id="empty-or"),
    pytest.param({"and": A1}, "filter.and", id="and-not-list"),
    pytest.param({"or": None}, "filter.or", id="or-null"),
    pytest.param({"not": []}, "filter.not", id="not-list"),
    pytest.param({"not": None}, "filter.not", id="not-null"),
    pytest.param({"and": [A1], "or": [A1]}, "filter", id="two-combinators"),
    pytest.param({"and": [A1], "field": "data.a"}, "filter", id="combinator-and-leaf-keys"),
    pytest.param({"and": [A1, 5]}, "filter.and.1", id="and-item-not-object"),
    pytest.param({"and": [A1, leaf("data.a", "bogus", 1)]}, "filter.and.1.op",
                 id="nested-op-path"),
    pytest.param({"or": [A1, {"not": {"and": [A1, leaf("nope", "eq", 1)]}}]},
                 "filter.or.1.not.and.1.field", id="deep-field-path"),
    pytest.param(nested_not(8), "filter" + ".not" * 8, id="too-deep"),
    pytest.param({"and": [{"or": [{"and": [{"or": [{"and": [{"or": [{"and": [
        {"or": [A1]}]}]}]}]}]}]}]}, "filter.and.0.or.0.and.0.or.0.and.0.or.0.and.0.or.0",
        id="too-deep-and-or"),
    pytest.param({"or": [A1] * 51}, "filter.or.50", id="51-conditions"),
    pytest.param({"and": [{"or": [A1] * 30}, {"or": [A1] * 30}]}, "filter.and.1.or.20",
                 id="51-conditions-nested"),
    pytest.param(leaf("data.a", "in", []), "filter.value", id="in-empty"),
    pytest.param(leaf("data.a", "in", list(range(101))), "filter.value", id="in-101"),
    pytest.param(leaf("data.a", "in", 1), "filter.value", id="in-not-list"),
    pytest.param(leaf("data.a", "in", {"a": 1}), "filter.value", id="in-object"),
    pytest.param(leaf("data.a", "exists", "yes"), "filter.value", id="exists-string"),
    pytest.param(leaf("data.a", "exists", 1), "filter.value", id="exists-one"),
    pytest.param({"field": "data.a", "op": "exists", "value": None}, "filter.value",
                 id="exists-null"),
    pytest.param(leaf("data.a", "lt", True), "filter.value", id="lt-bool"),
    pytest.param(leaf("data.a", "gte", False), "filter.value", id="gte-bool"),
    pytest.param(leaf("data.a", "gt", None), "filter.value", id="gt-null"),
    pytest.param(leaf("data.a", "lte", [1]), "filter.value", id="lte-list"),
    pytest.param(leaf("data.a", "lt", {"a": 1}), "filter.value", id="lt-object"),
    pytest.param(leaf("data.a", "prefix", 5), "filter.value", id="prefix-number"),
    pytest.param(leaf("data.a", "prefix", None), "filter.value", id="prefix-null"),
    pytest.param(leaf("data.a", "eq", "a\x00b"), "filter.value", id="nul-in-value"),
    pytest.param(leaf("data.a", "prefix", "\x00"), "filter.value", id="nul-in-prefix"),
    pytest.param(leaf("data.a", "contains", {"k": "\x00"}), "filter.value",
                 id="nul-in-contains"),
    pytest.param(leaf("data.a", "eq", "x" * 20_000), "filter.value", id="value-too-large"),
    pytest.param(leaf("data.a", "in", [1, "\x00"]), "filter.value.1", id="nul-in-in"),
]


async def test_filter_validation_errors(rpc, ds):
    """All -32602 (never -32603), each at the path of the offending part."""
    await check_errors([p.values for p in FILTER_ERRORS],
                       lambda f: query(rpc, ds.tenant_id, filter=f))


async def test_filter_must_be_an_object(rpc, ds):
    await check_errors([(f, "filter") for f in ([A1], "data.a = 1", 5, True, 1.5)],
                       lambda f: query(rpc, ds.tenant_id, filter=f))


@pytest.mark.parametrize("op", [["eq"], {"eq": 1}], ids=["list", "object"])
async def test_unhashable_op_is_invalid_params(rpc, ds, op):
    got = await error_field_of(query(rpc, ds.tenant_id, filter=leaf("data.a", op, 1)))
    assert got == "filter.op"


async def test_limits_are_inclusive(rpc, ds):
    # 7 nots around a leaf = 8 levels: allowed (and an odd number of nots negates)
    assert await ds.match(rpc, nested_not(7)) == ALL - await ds.match(rpc, nested_not(0))
    assert await ds.match(rpc, {"or": [leaf("data.n", "eq", 100)] * 50}) == {"G"}
    assert await ds.match(rpc, {"and": [{"or": [A1] * 25}, {"not": {"or": [A1] * 25}}]}) == \
        set()
    values = [f"v{i}" for i in range(98)] + ["apple", "banana"]
    assert await ds.match(rpc, leaf("data.s", "in", values)) == {"A", "B"}
    assert await ds.match(rpc, leaf("id", "in", [ds.ids["F"]] + [missing_id()] * 99)) == {"F"}
    # paths of 16 keys and keys of 256 characters are fine
    assert await ds.match(rpc, leaf("data." + ".".join("k" * 16), "exists", True)) == set()
    assert await ds.match(rpc, leaf(["data", "k" * 256], "exists", False)) == ALL


SORT_ERRORS = [
    ({"field": "id"}, "sort.field"),
    ({"field": "version"}, "sort.field"),
    ({"field": "node_type_id"}, "sort.field"),
    ({"field": "data"}, "sort.field"),
    ({"field": "name"}, "sort.field"),
    ({"field": "data..x"}, "sort.field"),
    ({"field": 5}, "sort.field"),
    ({"field": "created_at", "direction": "up"}, "sort.direction"),
    ({"field": "created_at", "direction": "DESC"}, "sort.direction"),
    ({"direction": "asc"}, "sort"),
    ({"field": "created_at", "extra": 1}, "sort"),
    ({}, "sort"),
]


async def test_sort_validation_errors(rpc, ds):
    await check_errors(SORT_ERRORS, lambda s: query(rpc, ds.tenant_id, sort=s))


OTHER_ERRORS = [
    ({"sort": "created_at"}, "sort"),
    ({"pagination": {"page_size": 1001}}, "pagination.page_size"),
    ({"pagination": {"page_size": -1}}, "pagination.page_size"),
    ({"pagination": {"page_size": "10"}}, "pagination.page_size"),
    ({"pagination": {"page_token": "x" * 1025}}, TOKEN),
    ({"pagination": {"include_total": "yes"}}, "pagination.include_total"),
    ({"node_type_id": "nope"}, "node_type_id"),
]


async def test_other_params_validation(rpc, ds):
    await check_errors([(tuple(p.items()), w) for p, w in OTHER_ERRORS],
                       lambda p: query(rpc, ds.tenant_id, **dict(p)))


async def test_invalid_tenant_id_and_missing_tenant(rpc):
    with pytest.raises(InvalidParams) as exc:
        await rpc.call("query_nodes", {"tenant_id": "nope"})
    assert error_fields(exc) == ["tenant_id"]
    with pytest.raises(NotFound):
        await rpc.call("query_nodes", {"tenant_id": missing_id(), "filter": A1})


async def test_no_internal_errors_on_odd_but_valid_filters(rpc, ds):
    # values of every JSON type, odd keys and unicode travel as parameters, never as SQL
    odd = ["'; DROP TABLE nodes; --", "\\", "\"", "{}", "$1", "ünï©ødé 🎉", "%", "_", ""]
    for text in odd:
        for op in ("eq", "ne", "lt", "prefix", "contains"):
            await ds.match(rpc, leaf(["data", text or "x", "y"], op, text))
        await ds.match(rpc, leaf(["data", text or "x"], "in", [text, 1, {"a": [text]}]))
        await ds.match(rpc, leaf(["data", "0", text or "x"], "exists", False))
    for value in (0, -1, 1.5e308, -1e-300, 2 ** 63 - 1, True, {"a": {"b": [None]}}, [[[]]]):
        for op in ("eq", "ne", "contains"):
            await ds.match(rpc, leaf("data.n", op, value))
    assert await ds.match(rpc, leaf("data.s", "eq", "'; DROP TABLE nodes; --")) == set()
    assert await ds.match(rpc, None) == ALL


# ---------------------------------------------------------------- tenant isolation

async def _twin(rpc, data_list) -> tuple[str, str, list[str]]:
    tid = (await rpc.call("create_tenant", {"slug": unique("iso"), "name": "I"}))["tenant"]["id"]
    nt = (await rpc.call("create_node_type", {"tenant_id": tid, "name": "Same"}))["node_type"]
    created = await rpc.call("create_nodes", {"tenant_id": tid, "nodes": [
        {"node_type_id": nt["id"], "data": d} for d in data_list]})
    return tid, nt["id"], [n["id"] for n in created["nodes"]]


async def test_tenant_isolation(rpc, server):
    data_list = [{"name": "x", "tags": ["a"], "n": i} for i in range(5)]
    a, type_a, ids_a = await _twin(rpc, data_list)
    b, type_b, ids_b = await _twin(rpc, data_list)

    async def ids_in(tid, **params):
        result = await query(rpc, tid, **params, pagination={"page_size": 1000})
        assert result["pagination"]["total_count"] == len(result["nodes"])
        return {n["id"] for n in result["nodes"]}

    for flt in (None, leaf("data.name", "eq", "x"), leaf("data.tags", "contains", "a"),
                leaf("data.n", "in", [0, 1, 2, 3, 4]), leaf("data.n", "gte", 0),
                leaf("data.name", "prefix", ""), leaf("data.name", "exists", True),
                leaf("data.nosuch", "ne", 1), {"not": leaf("data.name", "eq", "y")},
                leaf("version", "gte", 1), leaf("created_at", "gt", "2000-01-01")):
        assert await ids_in(a, filter=flt) == set(ids_a), flt
        assert await ids_in(b, filter=flt) == set(ids_b), flt
    # naming the other tenant's ids or node type finds nothing
    assert await ids_in(a, filter=leaf("id", "eq", ids_b[0])) == set()
    assert await ids_in(a, filter=leaf("id", "in", ids_b)) == set()
    assert await ids_in(a, filter={"or": [leaf("id", "eq", ids_b[0]),
                                          leaf("id", "eq", ids_a[0])]}) == {ids_a[0]}
    assert await ids_in(a, filter=leaf("node_type_id", "eq", type_b)) == set()
    assert await ids_in(a, filter=leaf("node_type_id", "ne", type_b)) == set(ids_a)
    assert await ids_in(a, node_type_id=type_b) == set()
    assert await ids_in(a, node_type_id=type_a) == set(ids_a)
    # a page token made in B replays only A's nodes in A
    page = await query(rpc, b, pagination={"page_size": 2})
    rest = await query(rpc, a, pagination={"page_size": 1000,
                                           "page_token": page["pagination"]["next_page_token"]})
    assert {n["id"] for n in rest["nodes"]} <= set(ids_a)

    # a non-member gets "not found", exactly like a missing tenant
    user = (await rpc.call("create_user", {"email": f"{unique('q')}@example.com",
                                           "display_name": "Q"}))["user"]
    secret = (await rpc.call("create_api_key", {"name": "q", "user_id": user["id"]}))["secret"]
    async with FlexDBClient(server.url, api_key=secret) as outsider:
        for tid in (a, b, missing_id()):
            with pytest.raises(NotFound) as exc:
                await outsider.call("query_nodes", {"tenant_id": tid, "filter":
                                                    leaf("data.name", "eq", "x")})
            assert exc.value.code == -32001
        await rpc.call("add_user_to_tenant", {"tenant_id": a, "user_id": user["id"],
                                              "role": "viewer"})
        result = await outsider.call("query_nodes", {
            "tenant_id": a, "filter": leaf("data.name", "eq", "x"),
            "pagination": {"page_size": 1000}})
        assert {n["id"] for n in result["nodes"]} == set(ids_a)
        assert (await outsider.call("query_nodes", {
            "tenant_id": a, "filter": leaf("id", "in", ids_b)}))["nodes"] == []
        with pytest.raises(NotFound):
            await outsider.call("query_nodes", {"tenant_id": b})
        # invalid filters are still invalid params for a viewer
        with pytest.raises(InvalidParams):
            await outsider.call("query_nodes", {"tenant_id": a, "filter": {"and": []}})
