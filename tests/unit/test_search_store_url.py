"""The search store's URL, its registry entries and the missing-client message. No server:
opening a store would connect, so only what happens before connecting is tested here."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from feedrank.exceptions import MissingExtraError, RowError, StoreError
from feedrank.store import BACKENDS, open_store
from feedrank.store.search import BulkWriteError, parse_url
from feedrank.store.search_connect import ES_CLIENT_FOR, ServerInfo, check_server
from feedrank.store.search_setup import vector_search_mode


def test_url_with_credentials_and_options() -> None:
    c = parse_url(
        "elasticsearch+https://elastic:p%40ss@search.example:9243/"
        "?prefix=site_&replicas=0&shards=3&refresh=false&retention_months=13&verify_certs=false"
    )
    assert c.flavor == "elasticsearch"
    assert c.host_url == "https://search.example:9243"
    assert (c.username, c.password) == ("elastic", "p@ss")
    assert (c.prefix, c.replicas, c.shards) == ("site_", 0, 3)
    assert c.refresh is False and c.verify_certs is False
    assert c.retention_months == 13
    assert "p@ss" not in repr(c)  # secrets stay out of logs


def test_url_defaults() -> None:
    c = parse_url("opensearch+http://localhost")
    assert c.flavor == "opensearch"
    assert c.host_url == "http://localhost:9200"
    assert (c.prefix, c.refresh, c.shards, c.replicas) == ("feedrank_", True, 1, 1)
    assert c.retention_months is None and c.username is None
    assert parse_url("opensearch+https://[::1]:9243").host_url == "https://[::1]:9243"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("elasticsearch://localhost:9200", "must start with one of"),
        ("solr+http://localhost:9200", "must start with one of"),
        ("opensearch+http://localhost:9200/some/path", "must have no path"),
        ("opensearch+http://localhost:9200/?colour=blue", r"options must be among .*\['colour'\]"),
        ("opensearch+http://localhost:9200/?shards=many", "shards=many|not valid"),
        ("opensearch+http://localhost:9200/?prefix=Site_", "index prefix must be lowercase"),
    ],
)
def test_bad_urls_say_what_is_allowed(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        parse_url(url)


def test_both_schemes_are_registered_with_their_extras() -> None:
    assert BACKENDS["elasticsearch"].extra == "elasticsearch"
    assert BACKENDS["opensearch"].extra == "opensearch"
    assert BACKENDS["elasticsearch"].module == BACKENDS["opensearch"].module


@pytest.mark.parametrize(
    ("flavor", "module"), [("elasticsearch", "elasticsearch"), ("opensearch", "opensearchpy")]
)
def test_missing_client_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, flavor: str, module: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import of the client now fails
    with pytest.raises(MissingExtraError, match=rf"pip install 'feedrank\[{flavor}\]'"):
        open_store(f"{flavor}+http://localhost:9200")


def test_bulk_error_lists_rejected_documents_like_row_errors() -> None:
    errors = [
        RowError(n, "_id", f"event 'e{n}' was rejected: mapper_parsing_exception") for n in range(7)
    ]
    exc = BulkWriteError(errors, written=93)
    assert isinstance(exc, StoreError)
    assert exc.written == 93 and exc.errors == errors
    assert str(exc).startswith("7 document(s) rejected, 93 written: event 'e0' was rejected")
    assert "(and 2 more)" in str(exc)


# -- the server check: the engines' documented `GET /` answers ---------------------------------
def _info(number: str, distribution: str | None = None) -> dict[str, Any]:
    version: dict[str, Any] = {"number": number}
    if distribution:
        version["distribution"] = distribution
    return {"name": "n1", "version": version, "tagline": "You Know, for Search"}


def test_supported_servers_pass_the_check() -> None:
    assert check_server("opensearch", _info("2.19.6", "opensearch"), "3.2.0", "h") == (2, 19, 6)
    assert check_server("opensearch", _info("3.0.0", "opensearch"), "2.8.0", "h") == (3, 0, 0)
    assert check_server("elasticsearch", _info("8.15.0"), "8.19.0", "h") == (8, 15, 0)
    assert check_server("elasticsearch", _info("9.2.1"), "8.19.0", "h") == (9, 2, 1)
    assert check_server("elasticsearch", _info("9.0.0-SNAPSHOT"), "9.1.0", "h") == (9, 0, 0)


@pytest.mark.parametrize(
    ("flavor", "info", "client", "message"),
    [
        # a 9.x client sends version-9 requests, which Elasticsearch 8 rejects
        (
            "elasticsearch",
            _info("8.15.0"),
            "9.1.0",
            r"client's major must not be newer.*pip install 'elasticsearch>=8.13,<9'",
        ),
        ("elasticsearch", _info("7.17.0"), "8.19.0", r"must be one of \[8, 9\]; got 7.17.0"),
        ("opensearch", _info("1.3.19", "opensearch"), "3.2.0", r"one of \[2, 3\]; got 1.3.19"),
        ("opensearch", _info("8.15.0"), "3.2.0", "must be opensearch.*elasticsearch\\+http"),
        ("elasticsearch", _info("2.19.6", "opensearch"), "8.19.0", "opensearch\\+http"),
    ],
)
def test_wrong_engine_or_major_says_what_to_change(
    flavor: Any, info: dict[str, Any], client: str, message: str
) -> None:
    with pytest.raises(StoreError, match=message):
        check_server(flavor, info, client, "http://search:9200")


def test_server_info_knows_where_vectors_live_and_whether_knn_is_there() -> None:
    assert ServerInfo("elasticsearch", (9, 2, 0)).excludes_vectors
    assert not ServerInfo("elasticsearch", (9, 1, 5)).excludes_vectors
    assert not ServerInfo("opensearch", (3, 0, 0)).excludes_vectors
    assert ServerInfo("opensearch", (2, 19, 1), ("opensearch-knn",)).has_knn_plugin
    assert ServerInfo(
        "opensearch", (2, 19, 6), ("org.opensearch.knn.plugin.KNNPlugin",)
    ).has_knn_plugin
    assert not ServerInfo("opensearch", (2, 19, 6), ("opensearch-sql",)).has_knn_plugin


def test_the_extras_pin_a_client_that_talks_to_the_servers_they_name() -> None:
    # the `elasticsearch` extra takes the 8.x client (Elasticsearch 8 and 9 accept it)
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert f'elasticsearch = ["{ES_CLIENT_FOR[8]}"]' in pyproject
    assert f'elasticsearch9 = ["{ES_CLIENT_FOR[9]}"]' in pyproject


@pytest.mark.parametrize("flavor", ["elasticsearch", "opensearch"])
def test_an_unreachable_server_is_one_line_saying_what_to_check(flavor: str) -> None:
    # nothing listens on port 1 of the loopback: the real client gets connection refused
    with pytest.raises(
        StoreError, match=r"cannot reach the .* server at http://127\.0\.0\.1:1"
    ) as e:
        open_store(f"{flavor}+http://127.0.0.1:1/?timeout=5")
    assert "\n" not in str(e.value) and "is it running" in str(e.value)


def test_vectors_option_is_checked() -> None:
    assert parse_url("opensearch+http://h/?vectors=exact").vectors == "exact"
    with pytest.raises(StoreError, match=r"vectors must be one of \['auto', 'knn', 'exact'\]"):
        parse_url("opensearch+http://h/?vectors=fast")


def test_similar_items_mode_is_chosen_from_the_server_and_an_existing_index() -> None:
    os_knn = ServerInfo("opensearch", (2, 19, 6), ("org.opensearch.knn.plugin.KNNPlugin",))
    os_bare = ServerInfo("opensearch", (2, 19, 6), ("org.opensearch.painless.PainlessPlugin",))
    es = ServerInfo("elasticsearch", (9, 2, 0))
    assert vector_search_mode("auto", os_knn, None, "h") == "knn"
    assert vector_search_mode("auto", os_bare, None, "h") == "exact"
    assert vector_search_mode("auto", es, None, "h") == "knn"
    assert vector_search_mode("exact", os_knn, None, "h") == "exact"
    # an existing index keeps the kind it was built with
    plain = {"type": "float", "index": False, "doc_values": True}
    assert vector_search_mode("auto", os_knn, plain, "h") == "exact"
    assert vector_search_mode("auto", es, {"type": "dense_vector", "index": False}, "h") == "exact"
    assert vector_search_mode("auto", os_knn, {"type": "knn_vector", "dimension": 3}, "h") == "knn"
    with pytest.raises(StoreError, match=r"vectors=knn needs the k-NN plugin.*vectors=exact"):
        vector_search_mode("knn", os_bare, None, "http://search:9200")
