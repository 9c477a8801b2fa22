"""Request bodies of the search store as pure functions: ids with the SQLite store's
idempotence, bulk actions, filters, the GLM's rescore body and kNN. No server involved."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from feedrank.schema import EVENT_COLUMNS
from feedrank.store.search_layout import Names
from feedrank.store.search_queries import (
    GLM_SCRIPT_SOURCE,
    MAX_ID_BYTES,
    MAX_KNN,
    MAX_TERMS,
    candidate_query,
    event_actions,
    event_doc_ids,
    events_query,
    exact_cosine_body,
    glm_search_body,
    item_actions,
    item_feature_actions,
    key_id,
    knn_body,
    recommendation_actions,
    source_filter,
    usable_vector,
    user_actions,
)
from feedrank.store.sqlite import SQLiteStore

T0 = datetime(2024, 3, 1, 12, tzinfo=UTC)


def events(rows: list[tuple[str | None, str, str, str, datetime]]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {"event_id": e, "user_id": u, "item_id": i, "type": t, "timestamp": ts, "value": 1.0}
            for e, u, i, t, ts in rows
        ],
        schema=EVENT_COLUMNS,
    )


def test_key_id_keeps_short_keys_and_hashes_long_ones() -> None:
    assert key_id("0042") == "0042"
    long = "x" * 600
    assert key_id(long).startswith("#") and len(key_id(long)) <= MAX_ID_BYTES
    assert key_id("#abc") != "#abc"  # a raw id never looks like a hashed one
    assert key_id(long) != key_id(long + "y")


def test_event_ids_have_the_sqlite_stores_idempotence() -> None:
    """Whatever batch goes in, the number of distinct ids is what SQLite stores."""
    us = timedelta(microseconds=1)
    rows = [
        (None, "u1", "i1", "click", T0),
        (None, "u1", "i1", "click", T0),  # same natural key
        (None, "u1", "i1", "click", T0 + us),  # a microsecond later: new
        (None, "u2", "i1", "click", T0),
        (None, "u1", "i2", "click", T0),
        (None, "u1", "i1", "like", T0),
        ("e1", "u1", "i1", "click", T0),  # an id: independent of the natural key
        ("e1", "u9", "i9", "like", T0 + timedelta(days=40)),  # same id: same event
        ("e2", "u1", "i1", "click", T0),
        (None, "u1", "", "login", T0),
        (None, "a|b", "c", "click", T0),  # separators inside ids cannot collide
        (None, "a", "b|c", "click", T0),
        (None, "a:1", "c", "click", T0),
        (None, "a", "1:c", "click", T0),
    ]
    frame = events(rows)
    store = SQLiteStore(":memory:")
    assert event_doc_ids(frame).n_unique() == store.add_events(frame) == 12
    store.close()


def test_event_actions_create_into_monthly_indices_routed_by_user() -> None:
    n = Names("p_")
    old = datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    frame = events([("e1", "u1", "i1", "click", T0), (None, "u2", "i2", "view", old)])
    acts = list(event_actions(frame, n, seq0=100))
    assert [a["_op_type"] for a in acts] == ["create", "create"]
    assert [a["_index"] for a in acts] == [
        "p_user_interactions-2024.03",
        "p_user_interactions-1969.12",
    ]
    assert [a["_routing"] for a in acts] == ["u1", "u2"]
    assert acts[0]["_id"] == "e:e1"
    src = [a["_source"] for a in acts]
    assert src[0]["ts_us"] == int(T0.timestamp()) * 1_000_000
    assert src[1]["ts_us"] == -1  # one microsecond before the epoch, exact
    assert src[1]["timestamp"] == -1  # epoch millis, floored
    assert [s["seq"] for s in src] == [100, 101]
    assert set(src[0]) == {*EVENT_COLUMNS, "ts_us", "seq"}


def test_item_actions_replace_attributes_and_keep_published_features() -> None:
    n = Names("p_")
    items = pl.DataFrame(
        {
            "item_id": ["a", "b"],
            "created_at": [T0, T0 - timedelta(microseconds=1)],
            "lang": ["en", None],
            "n_pages": [3, 12],
            "embedding": [[1.0, 0.0], [0.5, 0.5]],
        }
    )
    acts = list(item_actions(items, n))
    assert all(a["_op_type"] == "update" and a["_index"] == "p_post_metadata" for a in acts)
    doc = acts[0]["_source"]["upsert"]
    assert doc["attrs"] == {"lang": "en", "n_pages": 3}
    assert doc["lv"] == {"lang": "en", "n_pages": "3"}  # levels are text, as the features cast
    assert doc["embedding"] == [1.0, 0.0]
    assert doc["created_at_us"] == int(T0.timestamp()) * 1_000_000
    assert acts[1]["_source"]["upsert"]["created_at_us"] == doc["created_at_us"] - 1
    script = acts[0]["_source"]["script"]
    assert script["params"]["doc"] == doc
    assert "f" not in doc  # features are written by publish, and the script keeps them
    assert "ctx._source[e.getKey()]" in script["source"]


def test_feature_actions_write_only_f_fields() -> None:
    fields = pl.DataFrame({"item_id": ["a"], "lv.lang": ["en"], "f.item_ctr": [0.1]})
    (act,) = item_feature_actions(fields, Names("p_"), at_us=5)
    assert act["_source"] == {"doc": {"f": {"item_ctr": 0.1}, "features_at_us": 5}}
    assert act["_id"] == "a" and act["_op_type"] == "update"


def test_user_actions_keep_attributes_with_their_types() -> None:
    users = pl.DataFrame({"user_id": ["0042"], "zip": ["0001"], "age": [34], "score": [1e-9]})
    (act,) = user_actions(users, Names("p_"))
    assert act["_id"] == "0042"
    assert act["_source"] == {"user_id": "0042", "attrs": {"zip": "0001", "age": 34, "score": 1e-9}}


def test_recommendations_become_one_ranked_document_per_user() -> None:
    recs = pl.DataFrame(
        {
            "user_id": ["u1", "u2", "u1"],
            "rank": [2, 1, 1],
            "item_id": ["b", "z", "a"],
            "score": [0.5, 0.3, 0.9],
            "source": ["m", "m", "m"],
        }
    )
    acts = list(recommendation_actions(recs, "p_recs-g000001"))
    assert [a["_id"] for a in acts] == ["u1", "u2"]
    assert acts[0]["_source"] == {
        "user_id": "u1",
        "ranks": [1, 2],
        "items": ["a", "b"],
        "scores": [0.9, 0.5],
        "sources": ["m", "m"],
    }


def test_events_query_is_start_inclusive_end_exclusive_on_microseconds() -> None:
    q = events_query(10, 20, ["u1"], ["click"])
    assert q == {
        "bool": {
            "filter": [
                {"range": {"ts_us": {"gte": 10, "lt": 20}}},
                {"terms": {"user_id": ["u1"]}},
                {"terms": {"type": ["click"]}},
            ]
        }
    }
    assert events_query(None, None) == {"match_all": {}}
    assert events_query(None, 5) == {"bool": {"filter": [{"range": {"ts_us": {"lt": 5}}}]}}
    with pytest.raises(ValueError, match=f"at most {MAX_TERMS} user ids"):
        events_query(None, None, [str(i) for i in range(MAX_TERMS + 1)])


def test_candidates_exist_at_serving_time_and_are_not_seen() -> None:
    q = candidate_query(1_000_000_000, ["a", "b"], max_age_days=1.0)["bool"]
    assert q["filter"] == [
        {"range": {"created_at_us": {"lte": 1_000_000_000, "gte": 1_000_000_000 - 86_400_000_000}}}
    ]
    assert q["must_not"] == [{"terms": {"item_id": ["a", "b"]}}]
    many = [str(i) for i in range(MAX_TERMS + 5)]
    assert len(candidate_query(0, many)["bool"]["must_not"]) == 2
    assert "must_not" not in candidate_query(0)["bool"]
    with pytest.raises(ValueError, match="max_age_days must be > 0"):
        candidate_query(0, max_age_days=0)


def test_glm_body_rescores_a_window_with_the_stored_script() -> None:
    params = {"base": 0.1}
    body = glm_search_body("p_glm-logit", params, 77, k=10, exclude_item_ids=["x"], window=500)
    assert body["size"] == 30  # k + margin, re-sorted by the exact double
    assert body["query"]["constant_score"]["filter"]["bool"]["must_not"] == [
        {"terms": {"item_id": ["x"]}}
    ]
    r = body["rescore"]
    assert r["window_size"] == 500
    assert r["query"]["query_weight"] == 0.0 and r["query"]["rescore_query_weight"] == 1.0
    script = r["query"]["rescore_query"]["script_score"]["script"]
    assert script == {"id": "p_glm-logit", "params": params}
    assert body["script_fields"]["p"]["script"] == script
    assert glm_search_body("s", params, 0, k=600, window=500)["size"] == 500
    pre = glm_search_body("s", params, 0, k=5, prefilter_field="f.item_ctr")
    assert pre["query"]["function_score"]["field_value_factor"]["field"] == "f.item_ctr"
    with pytest.raises(ValueError, match="k and window must be >= 1"):
        glm_search_body("s", params, 0, k=0)


def test_glm_script_reads_every_param_and_returns_a_probability() -> None:
    used = set(re.findall(r"params\.(\w+)", GLM_SCRIPT_SOURCE))
    assert used == {"base", "now_us", "num", "age", "cat", "share", "pair", "pair_other"}
    assert ".default" not in GLM_SCRIPT_SOURCE  # a Java keyword
    assert GLM_SCRIPT_SOURCE.rstrip().endswith("return 1.0 / (1.0 + Math.exp(-z));")
    assert "Math.max(-35.0, Math.min(35.0, z))" in GLM_SCRIPT_SOURCE  # glm.sigmoid's clip


def test_knn_per_engine() -> None:
    es = knn_body("elasticsearch", [1, 0], 5)
    assert es["knn"]["field"] == "embedding" and es["knn"]["k"] == 6
    assert es["knn"]["query_vector"] == [1.0, 0.0]
    assert es["knn"]["num_candidates"] >= es["knn"]["k"]
    os_ = knn_body("opensearch", [1, 0], 5)
    assert os_["query"] == {"knn": {"embedding": {"vector": [1.0, 0.0], "k": 6}}}
    with pytest.raises(ValueError, match="k must be between 1 and 9999"):
        knn_body("opensearch", [1.0], 0)


def test_knn_candidates_stay_within_the_engines_cap() -> None:
    # Elasticsearch: num_candidates <= 10,000 and >= k; both engines refuse k over 10,000
    for k in (1, 24, 2_499, 2_500, 9_999):
        body = knn_body("elasticsearch", [1.0, 0.0], k)["knn"]
        assert body["k"] <= body["num_candidates"] <= MAX_KNN
    with pytest.raises(ValueError, match="between 1 and 9999"):
        knn_body("elasticsearch", [1.0], MAX_KNN)


def test_zero_and_non_finite_vectors_are_not_searched_nor_written() -> None:
    assert not usable_vector([0.0, 0.0]) and not usable_vector([]) and not usable_vector(None)
    assert not usable_vector([1.0, float("nan")])
    assert usable_vector([0.0, 1e-30])
    with pytest.raises(ValueError, match="not all zeros"):
        knn_body("opensearch", [0.0, 0.0], 3)
    items = pl.DataFrame(
        {"item_id": ["a", "z"], "created_at": [T0, T0], "embedding": [[1.0, 0.0], [0.0, 0.0]]}
    )
    docs = {a["_id"]: a["_source"]["upsert"] for a in item_actions(items, Names("p_"))}
    assert docs["a"]["embedding"] == [1.0, 0.0]
    assert "embedding" not in docs["z"]  # the engines reject it under cosine: stored without


def test_exact_cosine_per_engine() -> None:
    es = exact_cosine_body("elasticsearch", [3.0, 4.0], 5)
    script = es["query"]["script_score"]["script"]
    assert "cosineSimilarity(params.q, 'embedding')" in script["source"]
    assert es["query"]["script_score"]["query"] == {"exists": {"field": "embedding"}}
    os_ = exact_cosine_body("opensearch", [3.0, 4.0], 5)["query"]["script_score"]["script"]
    assert os_["params"] == {"q": [3.0, 4.0], "qn": 5.0}
    assert es["size"] == 6


def test_vectors_are_asked_for_where_the_engine_leaves_them_out_of_source() -> None:
    # Elasticsearch 9.2+ excludes dense vectors from _source unless the search asks
    assert source_filter(["item_id", "embedding"], excludes_vectors=True) == {
        "includes": ["item_id", "embedding"],
        "exclude_vectors": False,
    }
    assert source_filter(["item_id", "embedding"], excludes_vectors=False) == [
        "item_id",
        "embedding",
    ]
    assert source_filter(["item_id"], excludes_vectors=True) == ["item_id"]


@pytest.mark.parametrize("client", ["elasticsearch", "opensearchpy"])
def test_actions_are_what_each_official_bulk_helper_expects(client: str) -> None:
    """The clients' own action expansion (no server): meta line and body as intended."""
    helpers = pytest.importorskip(f"{client}.helpers")
    n = Names("p_")
    frame = events([(None, "u1", "i1", "click", T0)])
    meta, body = helpers.expand_action(next(event_actions(frame, n, 0)))
    assert meta == {
        "create": {
            "_index": "p_user_interactions-2024.03",
            "_id": event_doc_ids(frame)[0],
            "routing": "u1",
        }
    }
    assert body["ts_us"] == int(T0.timestamp()) * 1_000_000
    items = pl.DataFrame({"item_id": ["a"], "created_at": [T0], "lang": ["en"]})
    meta, body = helpers.expand_action(next(item_actions(items, n)))
    assert meta == {"update": {"_index": "p_post_metadata", "_id": "a"}}
    assert set(body) == {"script", "upsert"}
