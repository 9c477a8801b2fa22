"""The Elasticsearch/OpenSearch store against the Store contract, plus what only a search
engine does: monthly event indices with retention, the generation alias, bulk error reports,
kNN, and the GLM evaluated inside the engine (same order as Python, probabilities within 1e-6).

Nothing here is faked. The OpenSearch cases (marker `opensearch`) run against the session's
real node (tests/opensearch_node.py: tools/opensearch, or FEEDRANK_OPENSEARCH_URL); they skip,
saying why, only where Java or Maven is missing. The Elasticsearch cases need a server of your
own (elasticsearch-py refuses OpenSearch servers) and skip without one:

    FEEDRANK_TEST_ES_URL=elasticsearch+http://localhost:9200

Each test works under its own random index prefix and deletes it afterwards; see
docs/elasticsearch.md."""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from feedrank.datasets.demo import generate_site
from feedrank.exceptions import NotFoundError, StoreError
from feedrank.io import import_frame
from feedrank.models.glm import GLMRecommender
from feedrank.models.glm_export import GLMExport, epoch_us
from feedrank.settings import Settings
from feedrank.store import open_store
from feedrank.store import search as search_module
from feedrank.store.base import Store
from feedrank.store.search import BulkWriteError, SearchStore, parse_url
from feedrank.store.search_connect import as_json
from feedrank.store.search_layout import swap_alias_actions
from feedrank.views.catalogue import Catalogue
from feedrank.views.site import read_site
from feedrank.views.view import FrameView, StoreView, store_catalogue

from .store_contract import T0, StoreContract, ev, events_frame, recs_frame

ES_VAR = "FEEDRANK_TEST_ES_URL"
SERVERS = [
    pytest.param(
        "elasticsearch",
        marks=[
            pytest.mark.integration,
            pytest.mark.skipif(
                not os.environ.get(ES_VAR),
                reason=f"no Elasticsearch server: set {ES_VAR} "
                "(e.g. elasticsearch+http://localhost:9200) to run",
            ),
        ],
    ),
    pytest.param("opensearch", marks=pytest.mark.opensearch),
]


def server_url(request: pytest.FixtureRequest) -> str:
    """The store URL of the parametrised engine; the OpenSearch node starts on first use."""
    if request.param == "elasticsearch":
        return os.environ[ES_VAR]
    url: str = request.getfixturevalue("opensearch_url")
    return url


def _with_prefix(url: str, prefix: str) -> str:
    base = url.rstrip("/")
    sep = "&" if "?" in base else "/?"
    return f"{base}{sep}prefix={prefix}&replicas=0"


@pytest.fixture(params=SERVERS)
def search_store(request: pytest.FixtureRequest) -> Iterator[SearchStore]:
    store = open_store(_with_prefix(server_url(request), f"frt{uuid.uuid4().hex[:12]}_"))
    assert isinstance(store, SearchStore)
    yield store
    store.drop()
    store.close()


class TestSearchStore(StoreContract):
    @pytest.fixture
    def store(self, search_store: SearchStore) -> Iterator[Store]:
        yield search_store

    def reader_for(self, store: Store) -> Store:
        # Another client on the same indices, as another process has.
        assert isinstance(store, SearchStore)
        return SearchStore(store.config)


def test_events_live_in_monthly_indices_behind_one_alias(search_store: SearchStore) -> None:
    s, n = search_store, search_store.names
    jan, mar = datetime(2024, 1, 20, tzinfo=UTC), datetime(2024, 3, 2, tzinfo=UTC)
    s.add_events(events_frame([ev("u1", "a", "click", jan), ev("u1", "b", "click", mar)]))
    assert s._indices(n.events_pattern) == [n.events_index("2024.01"), n.events_index("2024.03")]
    aliased = s.client.indices.get_alias(name=n.events_alias)
    assert sorted(getattr(aliased, "body", aliased)) == s._indices(n.events_pattern)
    # an event id seen in January is the same event when it comes back dated March
    s.add_events(events_frame([ev("u2", "c", "like", jan, event_id="x")]))
    assert s.add_events(events_frame([ev("u2", "c", "like", mar, event_id="x")])) == 0
    assert s.events(user_ids=["u2"])["timestamp"].to_list() == [jan]


def test_retention_drops_whole_old_months(search_store: SearchStore) -> None:
    s = search_store
    jan, mar = datetime(2024, 1, 20, tzinfo=UTC), datetime(2024, 3, 2, tzinfo=UTC)
    s.add_events(events_frame([ev("u1", "a", "click", jan), ev("u1", "b", "click", mar)]))
    keeping = SearchStore(dataclasses.replace(s.config, retention_months=2))
    dropped = keeping.apply_retention(now=datetime(2024, 3, 15, tzinfo=UTC))
    assert dropped == [s.names.events_index("2024.01")]
    assert s.events()["item_id"].to_list() == ["b"]
    keeping.close()


def test_generations_are_indices_behind_one_alias(search_store: SearchStore) -> None:
    s, n = search_store, search_store.names
    ids = [s.write_generation(recs_frame([("u1", 1, f"g{g}", 1.0)]), f"m{g}") for g in range(4)]
    target = s.client.indices.get_alias(name=n.recs_alias)
    assert list(getattr(target, "body", target)) == [n.recs_index(ids[-1])]
    # the served one and the one before it (rollback) are kept; older ones are dropped
    assert s._indices(n.recs_pattern) == [n.recs_index(i) for i in ids[-2:]]
    s.activate_generation(ids[-2])
    assert s.recommendations("u1")["item_id"].to_list() == ["g2"]
    # ids are never reused after pruning
    assert s.write_generation(recs_frame([("u1", 1, "new", 1.0)]), "m") > ids[-1]


def test_rejected_documents_are_reported_and_the_rest_written(search_store: SearchStore) -> None:
    s = search_store
    s.upsert_items(pl.DataFrame({"item_id": ["a"], "created_at": [T0], "price": [9.5]}))
    bad = pl.DataFrame({"item_id": ["b", "c"], "created_at": [T0, T0], "price": ["3", "cheap"]})
    with pytest.raises(BulkWriteError) as caught:
        s.upsert_items(bad)
    (err,) = caught.value.errors
    assert err.line == 2 and err.field == "_id" and "'c'" in err.message
    assert caught.value.written == 1
    s.client.indices.refresh(index=s.names.items)
    assert sorted(s.items()["item_id"].to_list()) == ["a", "b"]


def test_similar_items_by_knn(search_store: SearchStore) -> None:
    s = search_store
    vectors = {
        "a": [1.0, 0.0, 0.0],
        "b": [0.9, 0.1, 0.0],
        "c": [0.0, 0.2, 1.0],
        "d": [0.0, 1.0, 0.0],
    }
    s.upsert_items(
        pl.DataFrame(
            {"item_id": list(vectors), "created_at": [T0] * 4, "embedding": list(vectors.values())}
        )
    )
    got = s.similar_items("a", k=2)
    assert got["item_id"].to_list()[0] == "b"
    a, b = np.array(vectors["a"]), np.array(vectors["b"])
    assert got["score"][0] == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b), abs=1e-3)
    assert "a" not in got["item_id"].to_list()
    with pytest.raises(NotFoundError):
        s.similar_items("nope")
    # an item upserted again without its vector loses it (the store replaces attributes)
    s.upsert_items(pl.DataFrame({"item_id": ["d"], "created_at": [T0]}))
    with pytest.raises(NotFoundError, match="no 'embedding'"):
        s.similar_items("d")


def test_glm_in_the_engine_ranks_as_python_does(search_store: SearchStore) -> None:
    s, settings = search_store, Settings()
    site = generate_site(n_users=120, n_items=60, days=8, seed=3)
    for kind, frame in (
        ("users", site.users),
        ("items", site.items),
        ("interactions", site.events),
    ):
        assert import_frame(s, kind, frame, settings).bad == 0  # type: ignore[arg-type]
    data = read_site(s)
    model = GLMRecommender().fit(data, settings)
    # The export is plain data: params from a GLM serving a view of this store, item fields
    # published to the items index; the store runs the script without importing a model.
    export = GLMExport(model.at(StoreView(s, settings, store_catalogue(s))))
    fields = export.item_fields()
    assert s.publish_item_features(fields, epoch_us(export.at)) == fields.height
    frames = model.at(FrameView(data, settings))  # what offline serving answers
    users = sorted(data.events["user_id"].unique().to_list())[::12]
    for u in users:
        want = frames.recommend([u], k=10, exclude_seen=True)
        got = s.glm_recommend(export.user_params(u), u, export.seen_items(u), k=10, window=1_000)
        assert got["item_id"].to_list() == want["item_id"].to_list(), u
        np.testing.assert_allclose(got["score"].to_numpy(), want["score"].to_numpy(), atol=1e-6)
        assert (got["score"] > 0).all()
    # a later request: item ages move in the script, from created_at_us and now_us
    cat = store_catalogue(s)
    later_at = cat.as_of + timedelta(days=5)
    later = model.at(StoreView(s, settings, Catalogue(cat.items, cat.counts, later_at), later_at))
    u = users[0]
    params = GLMExport(later).user_params(u)
    got = s.glm_recommend(params, u, GLMExport(later).seen_items(u), k=10)
    assert got["item_id"].to_list() == later.recommend([u], k=10)["item_id"].to_list()


# -- OpenSearch only: what the real node showed ------------------------------------------------
@pytest.fixture
def os_store(opensearch_url: str) -> Iterator[SearchStore]:
    store = open_store(_with_prefix(opensearch_url, f"frt{uuid.uuid4().hex[:12]}_"))
    assert isinstance(store, SearchStore)
    yield store
    store.drop()
    store.close()


def _aliased(s: SearchStore) -> list[str]:
    return sorted(as_json(s.client.indices.get_alias(name=s.names.recs_alias)))


@pytest.mark.opensearch
def test_a_stale_alias_swap_fails_whole_and_changes_nothing(os_store: SearchStore) -> None:
    s, n = os_store, os_store.names
    g1 = s.write_generation(recs_frame([("u1", 1, "one", 1.0)]), "m1")
    g2 = s.write_generation(recs_frame([("u1", 1, "two", 1.0)]), "m2", activate=False)
    g3 = s.write_generation(recs_frame([("u1", 1, "three", 1.0)]), "m3", activate=False)
    # a writer that still believes g2 is active: must_exist makes the engine refuse it all
    stale = swap_alias_actions(n.recs_alias, n.recs_index(g3), n.recs_index(g2), n.recs_pattern)
    with pytest.raises(s._not_found):
        s.client.indices.update_aliases(body=stale)
    assert _aliased(s) == [n.recs_index(g1)]
    # without must_exist the same call is acknowledged and leaves two indices behind the alias
    stale["actions"][0]["remove"].pop("must_exist")
    s.client.indices.update_aliases(body=stale)
    assert _aliased(s) == [n.recs_index(g1), n.recs_index(g3)]
    with pytest.raises(StoreError, match="must point at one generation index"):
        s.generations()
    # activating reads the alias again and repairs it in one call
    s.activate_generation(g2)
    assert _aliased(s) == [n.recs_index(g2)]
    assert s.recommendations("u1")["item_id"].to_list() == ["two"]


@pytest.mark.opensearch
def test_a_failed_generation_is_deleted_and_never_active(os_store: SearchStore) -> None:
    s, n = os_store, os_store.names
    served = s.write_generation(recs_frame([("u1", 1, "served", 1.0)]), "m1")
    # the meta index refuses writes: the generation cannot be recorded
    s.client.indices.put_settings(index=n.meta, body={"index.blocks.write": True})
    with pytest.raises(StoreError, match=r"write generation .*cluster_block_exception"):
        s.write_generation(recs_frame([("u1", 1, "half", 1.0)]), "m2")
    s.client.indices.put_settings(index=n.meta, body={"index.blocks.write": False})
    assert s._indices(n.recs_pattern) == [n.recs_index(served)]
    assert [g.id for g in s.generations()] == [served]
    assert s.recommendations("u1")["item_id"].to_list() == ["served"]


@pytest.mark.opensearch
def test_a_missing_index_is_one_line_saying_what_to_do(os_store: SearchStore) -> None:
    s = os_store
    s.upsert_items(pl.DataFrame({"item_id": ["a"], "created_at": [T0]}))
    s.client.indices.delete(index=s.names.items)
    for call in (
        s.items,
        lambda: s.upsert_items(pl.DataFrame({"item_id": ["b"], "created_at": [T0]})),
    ):
        with pytest.raises(StoreError, match=f"index '{s.names.items}' must exist") as e:
            call()
        assert "\n" not in str(e.value) and "open the store again" in str(e.value)
    assert not s.client.indices.exists(index=s.names.items)  # nothing created on the fly
    reopened = SearchStore(s.config)  # opening again creates what is missing
    assert reopened.items().is_empty()
    reopened.close()


@pytest.mark.opensearch
def test_a_conflicting_mapping_is_refused_at_open(os_store: SearchStore) -> None:
    # an index of another prefix, made by something else with user_id as text
    url = _with_prefix(os_store.config.host_url, f"frt{uuid.uuid4().hex[:12]}_")
    users = f"{parse_url('opensearch+' + url).prefix}users"
    body = {"mappings": {"properties": {"user_id": {"type": "text"}}}}
    os_store.client.indices.create(index=users, body=body)
    try:
        with pytest.raises(StoreError, match="must have feedrank's mapping") as e:
            open_store("opensearch+" + url)
        assert f"'{users}'" in str(e.value) and "user_id: want keyword, got text" in str(e.value)
        # nothing else of that prefix was created
        assert list(as_json(os_store.client.indices.get(index=users.replace("users", "*")))) == [
            users
        ]
    finally:
        os_store.client.indices.delete(index=users)


@pytest.mark.opensearch
def test_an_elasticsearch_url_on_an_opensearch_server_says_which_to_use(
    opensearch_url: str,
) -> None:
    es_url = opensearch_url.replace("opensearch+", "elasticsearch+", 1)
    with pytest.raises(StoreError, match=r"opensearch\+http") as e:
        open_store(es_url)
    assert "\n" not in str(e.value)


def _search_totals(s: SearchStore) -> tuple[int, int]:
    """(shard-level queries, scrolls) run so far on this store's event indices."""
    stats = as_json(s.client.indices.stats(index=s.names.events_pattern, metric="search"))
    search = stats["_all"]["primaries"]["search"]
    return int(search["query_total"]), int(search["scroll_total"])


@pytest.mark.opensearch
def test_one_users_events_and_seen_items_are_one_routed_search_each(opensearch_url: str) -> None:
    # Three shards per monthly index: a routed search queries one of them, an unrouted one all.
    url = _with_prefix(opensearch_url, f"frt{uuid.uuid4().hex[:12]}_") + "&shards=3"
    s = open_store(url)
    assert isinstance(s, SearchStore)
    try:
        rows = [ev("u1", f"i{n}", "click", T0 + timedelta(seconds=n)) for n in range(30)]
        rows += [ev("u1", "shown", "impression", T0 + timedelta(minutes=5))]
        rows += [ev(f"u{n}", "x", "click", T0) for n in range(2, 12)]
        s.add_events(events_frame(rows))
        before = _search_totals(s)
        got = s.events(user_ids=["u1"])
        middle = _search_totals(s)
        seen, newest = s.seen_items("u1")
        after = _search_totals(s)
        assert got["item_id"].to_list() == [f"i{n}" for n in range(30)] + ["shown"]
        assert seen == {f"i{n}" for n in range(30)} and newest == T0 + timedelta(minutes=5)
        # one bounded search each, on the one shard (of one month) that holds the user; no scroll
        assert middle == (before[0] + 1, before[1])
        assert after == (middle[0] + 1, middle[1])
        s.events(types=["click"])  # the unrouted read asks every shard (the check can tell)
        assert _search_totals(s)[0] >= after[0] + 3
    finally:
        s.drop()
        s.close()


@pytest.mark.opensearch
def test_more_events_than_a_page_come_back_whole_and_in_order(
    os_store: SearchStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = os_store
    rows = [ev("u1", f"i{n:03d}", "click", T0 + timedelta(seconds=n // 3)) for n in range(50)]
    s.add_events(events_frame(rows))
    monkeypatch.setattr(search_module, "PAGE", 7)  # pages of 7: search_after and scroll paths
    assert s.events(user_ids=["u1"])["item_id"].to_list() == [r["item_id"] for r in rows]
    assert s.events()["item_id"].to_list() == [r["item_id"] for r in rows]


@pytest.mark.opensearch
def test_similar_items_by_exact_cosine_and_by_knn_agree(opensearch_url: str) -> None:
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(40, 8))
    items = pl.DataFrame(
        {
            "item_id": [f"p{n:02d}" for n in range(40)] + ["zero"],
            "created_at": [T0] * 41,
            "embedding": [*vectors.tolist(), [0.0] * 8],
        }
    )
    answers = {}
    for mode in ("knn", "exact"):
        url = _with_prefix(opensearch_url, f"frt{uuid.uuid4().hex[:12]}_") + f"&vectors={mode}"
        s = open_store(url)
        assert isinstance(s, SearchStore)
        try:
            assert s.stats()["similar_items"] == mode
            assert s.upsert_items(items) == 41  # the zero vector is stored without it
            with pytest.raises(NotFoundError, match="no 'embedding'"):
                s.similar_items("zero")
            answers[mode] = s.similar_items("p00", k=5)
        finally:
            s.drop()
            s.close()
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cos = unit[1:] @ unit[0]
    best = np.argsort(-cos)[:5] + 1
    want = [f"p{n:02d}" for n in best]
    for got in answers.values():
        assert got["item_id"].to_list() == want
        np.testing.assert_allclose(got["score"].to_numpy(), cos[best - 1], atol=1e-5)
