"""Shared fixtures, kept minimal."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

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
