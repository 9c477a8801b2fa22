"""Shared fixtures, kept minimal."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from opensearch_node import URL_VAR, SharedNode, missing_tools, store_url

from feedrank.settings import Settings
from feedrank.store.sqlite import SQLiteStore


@pytest.fixture
def settings() -> Settings:
    return Settings()


@pytest.fixture
def mem_store() -> Iterator[SQLiteStore]:
    """A fresh, empty in-memory SQLite store."""
    store = SQLiteStore(":memory:")
    yield store
    store.close()


@pytest.fixture(scope="session")
def opensearch_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`opensearch+http://127.0.0.1:PORT` of a real node: FEEDRANK_OPENSEARCH_URL, or the one
    node of this session (tools/opensearch), started on first use and stopped at the end."""
    if os.environ.get(URL_VAR):
        yield store_url(os.environ[URL_VAR])
        return
    missing = missing_tools()
    if missing:
        pytest.skip(
            f"no OpenSearch test node: java and mvn must be on PATH (or set {URL_VAR}); "
            f"missing {missing}"
        )
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    base = tmp_path_factory.getbasetemp()
    # xdist workers have their own basetemp under the session's; the node is shared at the top,
    # and follows the session's main process (the workers' parent).
    shared, session_pid = (base.parent, os.getppid()) if worker else (base, os.getpid())
    node = SharedNode(shared, session_pid)
    url = node.acquire()
    try:
        yield store_url(url)
    finally:
        node.release()
