"""Backends by URL through a lazy registry: a backend's module is imported only when its URL is
used, and a missing client names the extra that installs it."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from feedrank.exceptions import MissingExtraError, StoreError
from feedrank.store.base import Generation, Store


@dataclass(frozen=True)
class Backend:
    module: str
    cls: str
    extra: str | None = None  # pip extra that installs its client


BACKENDS: dict[str, Backend] = {
    "sqlite": Backend("feedrank.store.sqlite", "SQLiteStore"),
    "elasticsearch": Backend("feedrank.store.search", "ElasticsearchStore", "elasticsearch"),
    "opensearch": Backend("feedrank.store.search", "OpenSearchStore", "opensearch"),
}


def open_store(url: str) -> Store:
    """`sqlite:///path/to.db` (or `sqlite://:memory:`)."""
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower() if "://" in url else ""
    backend = BACKENDS.get(scheme)
    if backend is None:
        raise StoreError(f"store URL scheme must be one of {sorted(BACKENDS)}; got '{url}'")
    try:
        module = importlib.import_module(backend.module)
    except ImportError as exc:
        if backend.extra:
            raise MissingExtraError(
                f"the {scheme} store needs its client: pip install 'feedrank[{backend.extra}]' "
                f"({exc})"
            ) from exc
        raise
    store: Store = getattr(module, backend.cls).from_url(url)
    return store


__all__ = ["BACKENDS", "Generation", "Store", "open_store"]
