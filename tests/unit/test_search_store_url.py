"""The search store's URL, its registry entries and the missing-client message. No server:
opening a store would connect, so only what happens before connecting is tested here."""

from __future__ import annotations

import sys

import pytest

from feedrank.exceptions import MissingExtraError, RowError, StoreError
from feedrank.store import BACKENDS, open_store
from feedrank.store.search import BulkWriteError, parse_url


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
