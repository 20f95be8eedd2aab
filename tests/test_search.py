"""Full-text search in query_nodes: the `search` operator (web search syntax) combined with
the other conditions, ranking, snippets, per-type language and fields, a search right after
a write, tenant isolation, and the limits."""
from __future__ import annotations

import pytest

from rpc_server.client import InvalidParams

from .conftest import list_all, make_node_type, make_tenant

CORPUS = [
    {"title": "Postgres full text search", "body": "search search search with tsvector"},
    {"title": "Cooking pasta", "body": "boil water, add salt and pasta"},
    {"title": "Search engines", "body": "how a search engine ranks pages"},
    {"title": "Gardening", "body": "tomatoes need sun", "tags": ["search", "outdoor"]},
    {"title": "Nothing here", "body": "an unrelated document", "n": 7},
]


async def corpus(rpc, docs=CORPUS, **type_params):
    tenant = await make_tenant(rpc)
    nt = await make_node_type(rpc, tenant["id"], **type_params)
    nodes = (await rpc.call("create_nodes", {"tenant_id": tenant["id"], "nodes": [
        {"node_type_id": nt["id"], "data": d} for d in docs]}))["nodes"]
    return tenant["id"], nt, nodes


async def search(rpc, tenant_id, text, field="data", **extra):
    params = {"tenant_id": tenant_id, "filter": {"field": field, "op": "search", "value": text},
              "pagination": {"page_size": 100}, **extra}
    return (await rpc.call("query_nodes", params))["nodes"]


def titles(nodes) -> list[str]:
    return [n["data"]["title"] for n in nodes]


async def test_search_finds_every_string_value_by_default(rpc):
    tenant_id, nt, _ = await corpus(rpc)
    assert nt["search"] == {"language": "simple", "fields": None}
    found = await search(rpc, tenant_id, "search")
    assert sorted(titles(found)) == ["Gardening", "Postgres full text search",
                                     "Search engines"]  # the tag counts: a string value
    assert await search(rpc, tenant_id, "7") == []  # numbers are not text
    assert all("rank" in n and n["rank"] > 0 for n in found)


async def test_ranking_puts_the_best_match_first(rpc):
    tenant_id, _, _ = await corpus(rpc)
    ranked = await search(rpc, tenant_id, "search", sort={"by": "rank"})
    assert titles(ranked)[0] == "Postgres full text search"  # four times
    assert [n["rank"] for n in ranked] == sorted((n["rank"] for n in ranked), reverse=True)
    assert titles(ranked)[-1] == "Gardening"  # once, in a tag


async def test_web_search_syntax(rpc):
    tenant_id, _, _ = await corpus(rpc)
    assert titles(await search(rpc, tenant_id, '"search engine"')) == ["Search engines"]
    assert sorted(titles(await search(rpc, tenant_id, "search -tsvector"))) == \
        ["Gardening", "Search engines"]
    assert sorted(titles(await search(rpc, tenant_id, "pasta or tomatoes"))) == \
        ["Cooking pasta", "Gardening"]
    assert await search(rpc, tenant_id, "the") == []  # no match, and no error


async def test_search_combines_with_other_conditions(rpc):
    tenant_id, _, _ = await corpus(rpc)
    both = await rpc.call("query_nodes", {"tenant_id": tenant_id, "filter": {"and": [
        {"field": "data", "op": "search", "value": "search"},
        {"field": "data.title", "op": "prefix", "value": "Search"}]}})
    assert titles(both["nodes"]) == ["Search engines"]
    either = await rpc.call("query_nodes", {"tenant_id": tenant_id, "filter": {"or": [
        {"field": "data", "op": "search", "value": "pasta"},
        {"field": "data.n", "op": "eq", "value": 7}]}})
    assert sorted(titles(either["nodes"])) == ["Cooking pasta", "Nothing here"]
    negated = await rpc.call("query_nodes", {"tenant_id": tenant_id, "filter": {
        "not": {"field": "data", "op": "search", "value": "search"}}})
    assert sorted(titles(negated["nodes"])) == ["Cooking pasta", "Nothing here"]


async def test_search_on_a_path_matches_only_its_strings(rpc):
    tenant_id, _, _ = await corpus(rpc)
    assert sorted(titles(await search(rpc, tenant_id, "search", field="data.title"))) == \
        ["Postgres full text search", "Search engines"]
    assert titles(await search(rpc, tenant_id, "search", field="data.tags")) == ["Gardening"]
    assert await search(rpc, tenant_id, "search", field="data.missing") == []


async def test_a_search_right_after_a_write_sees_it(rpc):
    tenant_id, nt, nodes = await corpus(rpc)
    made = (await rpc.call("create_node", {"tenant_id": tenant_id, "node_type_id": nt["id"],
                                           "data": {"title": "Zebra crossing"}}))["node"]
    assert [n["id"] for n in await search(rpc, tenant_id, "zebra")] == [made["id"]]
    await rpc.call("update_node", {"tenant_id": tenant_id, "id": made["id"],
                                   "data": {"title": "Giraffe"}})
    assert await search(rpc, tenant_id, "zebra") == []
    assert [n["id"] for n in await search(rpc, tenant_id, "giraffe")] == [made["id"]]
    await rpc.call("delete_node", {"tenant_id": tenant_id, "id": made["id"]})
    assert await search(rpc, tenant_id, "giraffe") == []


async def test_another_tenants_documents_are_never_found(rpc):
    mine, _, _ = await corpus(rpc)
    theirs, _, their_nodes = await corpus(rpc, [{"title": "secret search words"}])
    found = await search(rpc, mine, "secret")
    assert found == []
    assert {n["tenant_id"] for n in await search(rpc, mine, "search")} == {mine}
    assert [n["id"] for n in await search(rpc, theirs, "secret")] == [their_nodes[0]["id"]]


async def test_language_and_fields_per_node_type(rpc):
    tenant_id, english, _ = await corpus(
        rpc, [{"title": "Running dogs", "body": "quickly"}],
        search={"language": "english", "fields": ["data.title"]})
    assert english["search"] == {"language": "english", "fields": [["data", "title"]]}
    plain = await make_node_type(rpc, tenant_id)
    await rpc.call("create_node", {"tenant_id": tenant_id, "node_type_id": plain["id"],
                                   "data": {"title": "He runs", "body": "run"}})
    # english stems (run, runs, running); simple does not; body is not indexed in english
    assert sorted(titles(await search(rpc, tenant_id, "run"))) == ["He runs", "Running dogs"]
    assert titles(await search(rpc, tenant_id, "quickly")) == []
    # a path the type does not index is still searched, row by row
    assert titles(await search(rpc, tenant_id, "quickly", field="data.body")) == \
        ["Running dogs"]
    assert titles(await search(rpc, tenant_id, "runs", node_type_id=plain["id"])) == ["He runs"]
    # changing the settings re-indexes the type's nodes
    updated = await rpc.call("update_node_type", {"tenant_id": tenant_id, "id": english["id"],
                                                  "search": {"language": "simple"}})
    assert updated["node_type"]["search"] == {"language": "simple", "fields": None}
    assert titles(await search(rpc, tenant_id, "quickly")) == ["Running dogs"]
    assert titles(await search(rpc, tenant_id, "run")) == ["He runs"]


async def test_highlighted_snippets(rpc):
    tenant_id, _, _ = await corpus(rpc)
    found = await search(rpc, tenant_id, "pasta", highlight=True)
    assert len(found) == 1
    assert "<mark>pasta</mark>" in found[0]["snippet"]
    plain = await search(rpc, tenant_id, "pasta")
    assert "snippet" not in plain[0]


async def test_snippets_escape_the_documents_html(rpc):
    """A snippet is HTML: markup in the data comes back escaped, only the marks are tags."""
    tenant_id, _, _ = await corpus(rpc, [
        {"title": "<script>alert(1)</script> evil & <b>bold</b> pasta \ue000x\ue001"}])
    snippet = (await search(rpc, tenant_id, "pasta", highlight=True))[0]["snippet"]
    # (ts_headline leaves tags out; whatever text is left is escaped)
    tags = snippet.replace("<mark>", "").replace("</mark>", "")
    assert "<" not in tags and ">" not in tags
    assert "&amp;" in snippet and "<mark>pasta</mark>" in snippet


async def test_rank_pages_walk_every_match_once(rpc):
    docs = [{"title": f"doc {i}", "body": " ".join(["word"] * (1 + i % 7))} for i in range(45)]
    tenant_id, _, nodes = await corpus(rpc, docs)
    seen = []
    token = ""
    while True:
        page = await rpc.call("query_nodes", {
            "tenant_id": tenant_id, "filter": {"field": "data", "op": "search", "value": "word"},
            "sort": {"by": "rank"}, "pagination": {"page_size": 10, "page_token": token}})
        seen += page["nodes"]
        token = page["pagination"]["next_page_token"]
        if not token:
            break
    assert sorted(n["id"] for n in seen) == sorted(n["id"] for n in nodes)
    ranks = [n["rank"] for n in seen]
    assert ranks == sorted(ranks, reverse=True)


@pytest.mark.parametrize("value", ["", "   ", "x" * 1001, 5, ["a"], None])
async def test_bad_search_texts_are_refused(rpc, value):
    tenant_id, _, _ = await corpus(rpc)
    with pytest.raises(InvalidParams) as exc:
        await search(rpc, tenant_id, value)
    assert exc.value.data["errors"][0]["field"] == "filter.value"


async def test_rank_and_highlight_need_a_search(rpc):
    tenant_id, _, _ = await corpus(rpc)
    for extra, field in [({"sort": {"by": "rank"}}, "sort"), ({"highlight": True}, "highlight"),
                         ({"sort": {"by": "score"}}, "sort")]:
        with pytest.raises(InvalidParams) as exc:
            await rpc.call("query_nodes", {"tenant_id": tenant_id, **extra})
        assert exc.value.data["errors"][0]["field"] == field


async def test_bad_search_settings_are_refused(rpc):
    tenant = await make_tenant(rpc)
    for search, field in [({"language": "klingon"}, "search.language"),
                          ({"fields": ["created_at"]}, "search.fields.0"),
                          ({"fields": [None]}, "search.fields.0"),
                          ({"fields": [{"a": 1}]}, "search.fields.0"),
                          ({"fields": ["data.a"] * 33}, "search.fields"),
                          ({"language": ""}, "search.language")]:
        with pytest.raises(InvalidParams) as exc:
            await make_node_type(rpc, tenant["id"], search=search)
        assert exc.value.data["errors"][0]["field"] == field, exc.value.data


async def test_change_events_carry_no_search_vector(rpc):
    tenant_id, _, _ = await corpus(rpc)
    changes = await list_all_changes(rpc, tenant_id)
    objects = [c["object"] for c in changes if c["kind"] == "node"]
    assert objects and all("search_vector" not in o for o in objects)


async def list_all_changes(rpc, tenant_id):
    for _ in range(50):  # the sequencer numbers them just after commit
        changes = (await rpc.call("list_changes", {"tenant_id": tenant_id}))["changes"]
        if sum(c["kind"] == "node" for c in changes) == len(CORPUS):
            return changes
        import asyncio
        await asyncio.sleep(0.1)
    return changes


async def test_listing_still_works_for_all_nodes(rpc):
    tenant_id, nt, nodes = await corpus(rpc)
    listed = await list_all(rpc, "list_nodes", "nodes", {"tenant_id": tenant_id})
    assert {n["id"] for n in listed} == {n["id"] for n in nodes}
    assert all("search_vector" not in n and "rank" not in n for n in listed)


async def test_a_document_with_more_words_than_a_search_vector_holds_is_still_stored(rpc):
    """A text search vector holds at most 1 MB: a document of ~30,000 distinct words is
    stored anyway, indexed by the start of its text."""
    import hashlib
    words = [hashlib.md5(str(i).encode()).hexdigest() for i in range(30_000)]
    tenant_id, nt, nodes = await corpus(rpc, [{"title": "big", "text": " ".join(words)}])
    assert len(nodes) == 1
    found = await search(rpc, tenant_id, words[0])
    assert [n["id"] for n in found] == [nodes[0]["id"]]
    # ... and a search on its path, matched row by row, does not fail on it either
    on_path = await search(rpc, tenant_id, words[0], field="data.text")
    assert [n["id"] for n in on_path] == [nodes[0]["id"]]
    updated = await rpc.call("update_node", {"tenant_id": tenant_id, "id": nodes[0]["id"],
                                             "data": {"title": "big", "text": " ".join(
                                                 reversed(words))}})
    assert updated["node"]["version"] == 2


async def test_a_snippet_is_bounded_whatever_the_text_between_matches(rpc):
    """Between two matches, 200 KB of characters that are no words (and that HTML escaping
    would multiply): the snippet stays short, and the page within its budget."""
    filler = "<" * 200_000
    tenant_id, _, _ = await corpus(rpc, [{"title": f"pasta {filler} pasta"}])
    found = await search(rpc, tenant_id, "pasta", highlight=True)
    assert len(found) == 1 and "<mark>pasta</mark>" in found[0]["snippet"]
    assert len(found[0]["snippet"]) <= 6 * 1000 + 20


async def test_rank_in_a_tenant_without_node_types_is_an_empty_answer(rpc):
    tenant = await make_tenant(rpc)
    assert await search(rpc, tenant["id"], "anything", sort={"by": "rank"}) == []


async def test_a_node_type_without_searched_fields_is_left_out_of_the_index(rpc, database_url):
    import asyncpg
    tenant_id, nt, nodes = await corpus(rpc, search={"fields": []})
    assert await search(rpc, tenant_id, "search") == []
    conn = await asyncpg.connect(database_url)
    try:
        empty = await conn.fetchval(
            "SELECT count(*) FROM nodes WHERE tenant_id = $1 AND search_vector = ''::tsvector",
            __import__("uuid").UUID(tenant_id))
    finally:
        await conn.close()
    assert empty == len(nodes)  # nothing to search, so nothing in the (partial) index
