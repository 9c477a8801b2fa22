"""The search store's layout as pure functions: names, mappings, template, alias swap,
retention. No server involved (the integration suite runs them against one)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import polars as pl
import pytest

from feedrank.store.search_layout import (
    Names,
    alias_errors,
    events_mapping,
    events_template_body,
    expired_event_indices,
    index_body,
    items_mapping,
    mapping_conflicts,
    month_expr,
    recs_mapping,
    swap_alias_actions,
    users_mapping,
    vector_mapping,
)


def test_names_share_one_prefix_and_parse_back() -> None:
    n = Names("site1_")
    assert n.items == "site1_post_metadata"
    assert n.users == "site1_users"
    assert n.events_alias == "site1_user_interactions"
    assert n.events_index("2024.03") == "site1_user_interactions-2024.03"
    assert n.month_of("site1_user_interactions-2024.03") == "2024.03"
    assert n.month_of("other_user_interactions-2024.03") is None
    assert n.recs_index(7) == "site1_recs-g000007"
    assert n.generation_of(n.recs_index(7)) == 7
    assert n.generation_of("site1_recs") is None
    assert n.generation_of("site2_recs-g000007") is None
    every = [n.items, n.users, n.meta, n.recs_alias, n.events_alias, n.recs_index(1)]
    assert all(x.startswith(n.prefix) for x in every)


@pytest.mark.parametrize("bad", ["Feedrank_", "_x", "a b", "x" * 62, "a/b"])
def test_prefix_must_be_a_valid_lowercase_index_prefix(bad: str) -> None:
    with pytest.raises(ValueError, match=r"index prefix must be lowercase.*got"):
        Names(bad)


def test_month_of_each_event_is_utc() -> None:
    oslo = timezone(timedelta(hours=1))
    ts = pl.Series(
        [
            datetime(2024, 3, 31, 23, 30, tzinfo=UTC),
            datetime(2024, 4, 1, 0, 30, tzinfo=oslo),  # 2024-03-31 23:30 UTC
            datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        ]
    ).dt.convert_time_zone("UTC")
    got = pl.DataFrame({"t": ts}).select(month_expr(pl.col("t")))["t"].to_list()
    assert got == ["2024.03", "2024.03", "1969.12"]


def test_events_mapping_is_strict_with_an_exact_microsecond_field() -> None:
    m = events_mapping()
    assert m["dynamic"] == "strict"
    assert m["properties"]["ts_us"] == {"type": "long"}
    assert m["properties"]["user_id"] == {"type": "keyword"}
    assert m["properties"]["context"]["index"] is False


def test_events_template_puts_every_month_behind_the_alias() -> None:
    n = Names("t_")
    body = events_template_body(n, "elasticsearch", shards=3, replicas=0)
    assert body["index_patterns"] == ["t_user_interactions-*"]
    assert body["template"]["aliases"] == {"t_user_interactions": {}}
    assert body["template"]["settings"]["index"]["number_of_shards"] == 3
    assert body["template"]["mappings"] == events_mapping()


def test_vector_field_per_engine() -> None:
    es = vector_mapping("elasticsearch", 16)
    assert es["type"] == "dense_vector" and es["dims"] == 16 and es["similarity"] == "cosine"
    os_ = vector_mapping("opensearch", 16)
    assert os_["type"] == "knn_vector" and os_["dimension"] == 16
    assert os_["method"]["space_type"] == "cosinesimil"
    with pytest.raises(ValueError, match="dimension must be >= 1; got 0"):
        vector_mapping("elasticsearch", 0)
    assert "embedding" not in items_mapping("opensearch")["properties"]
    assert items_mapping("elasticsearch", 8)["properties"]["embedding"]["dims"] == 8


def test_items_index_needs_knn_setting_only_on_opensearch() -> None:
    os_body = index_body(items_mapping("opensearch"), "opensearch", 1, 0, knn=True)
    es_body = index_body(items_mapping("elasticsearch"), "elasticsearch", 1, 0, knn=True)
    assert os_body["settings"]["index"]["knn"] is True
    assert "knn" not in es_body["settings"]["index"]
    with pytest.raises(ValueError, match="shards must be >= 1"):
        index_body(users_mapping(), "opensearch", 0, 0)


def test_attribute_numbers_are_doubles_and_levels_keywords() -> None:
    templates = {
        k: v for t in items_mapping("elasticsearch")["dynamic_templates"] for k, v in t.items()
    }
    assert templates["attr_longs"]["mapping"] == {"type": "double"}
    assert templates["attr_doubles"]["mapping"] == {"type": "double"}
    assert templates["levels"]["path_match"] == "lv.*"
    assert templates["levels"]["mapping"]["type"] == "keyword"
    assert templates["features"]["mapping"] == {"type": "double"}


def test_recommendation_documents_are_not_searchable_arrays() -> None:
    props = recs_mapping()["properties"]
    assert props["user_id"] == {"type": "keyword"}
    assert all(props[c]["index"] is False for c in ("ranks", "items", "scores", "sources"))


def test_alias_swap_is_one_checked_call_with_remove_and_add() -> None:
    body = swap_alias_actions("p_recs", "p_recs-g000002", "p_recs-g000001", "p_recs-g*")
    assert body == {
        "actions": [
            # must_exist: if another writer moved the alias, the whole call fails (404)
            {"remove": {"index": "p_recs-g000001", "alias": "p_recs", "must_exist": True}},
            {"add": {"index": "p_recs-g000002", "alias": "p_recs"}},
        ]
    }
    # no active generation: whatever holds the alias meanwhile is taken off in the same call
    assert swap_alias_actions("a", "i2", None, "i*") == {
        "actions": [
            {"remove": {"index": "i*", "alias": "a", "must_exist": False}},
            {"add": {"index": "i2", "alias": "a"}},
        ]
    }
    assert swap_alias_actions("a", "i2", "i2", "i*") == {
        "actions": [{"add": {"index": "i2", "alias": "a"}}]
    }


def test_alias_responses_with_errors_are_failures() -> None:
    assert alias_errors({"acknowledged": True}) == []
    # Elasticsearch 8.14+: a remove that found nothing answers 200 with errors: true
    es_814 = {
        "acknowledged": True,
        "errors": True,
        "action_results": [
            {
                "action": {"type": "remove", "indices": ["p_recs-g1"], "aliases": ["p_recs"]},
                "status": 404,
                "error": {
                    "type": "aliases_not_found_exception",
                    "reason": "aliases [p_recs] missing",
                },
            },
            {
                "action": {"type": "add", "indices": ["p_recs-g2"], "aliases": ["p_recs"]},
                "status": 200,
            },
        ],
    }
    assert alias_errors(es_814) == ["remove: aliases [p_recs] missing"]
    assert alias_errors({"acknowledged": True, "errors": True}) == ["errors: true"]
    assert alias_errors({"acknowledged": False}) == ["not acknowledged"]


def test_mapping_conflicts_name_the_field_and_both_types() -> None:
    want = items_mapping("opensearch")["properties"]
    have = {
        **want,
        "item_id": {"type": "text"},
        "attrs": {"properties": {"x": {"type": "keyword"}}},
    }
    assert mapping_conflicts(want, have) == ["item_id: want keyword, got text"]
    assert mapping_conflicts(want, {}) == []  # a field not there yet is no conflict


def test_without_knn_the_vector_is_a_plain_array_read_by_a_script() -> None:
    assert vector_mapping("opensearch", 3, knn=False) == {
        "type": "float",
        "index": False,
        "doc_values": True,
    }
    assert vector_mapping("elasticsearch", 3, knn=False)["index"] is False
    assert "embedding" in items_mapping("opensearch", 3, knn=False)["properties"]


def test_retention_drops_whole_months_older_than_the_window() -> None:
    n = Names("p_")
    months = ["2023.11", "2023.12", "2024.01", "2024.02", "2024.03"]
    indices = [n.events_index(m) for m in months] + ["p_users", "q_user_interactions-2000.01"]
    now = datetime(2024, 3, 15, tzinfo=UTC)
    assert expired_event_indices(n, indices, now, 3) == [
        n.events_index("2023.11"),
        n.events_index("2023.12"),
    ]
    assert expired_event_indices(n, indices, now, 1) == [n.events_index(m) for m in months[:-1]]
    assert expired_event_indices(n, indices, now, 24) == []
    # the year boundary: in January, 2 months keep December and January
    jan = datetime(2024, 1, 2, tzinfo=UTC)
    assert expired_event_indices(n, indices, jan, 2) == [n.events_index("2023.11")]
    with pytest.raises(ValueError, match="retention_months must be >= 1; got 0"):
        expired_event_indices(n, indices, now, 0)
