"""The Elasticsearch/OpenSearch store: the Store protocol on a search engine, plus ranking
inside it (precomputed top-K through an alias, the GLM as a painless script, kNN similar items).

    elasticsearch+http(s)://[user:password@]host[:port][/?prefix=feedrank_&...]
    opensearch+http(s)://...

Query options: prefix (index-name prefix), refresh (true: profiles and published item features
are readable at once; false: bulk loads, refresh later — events, items and erasures are always
refreshed before their change-feed block is published), shards, replicas, retention_months,
verify_certs, ca_certs, api_key, timeout, vectors (auto, knn, exact), feed_lease (seconds).
The URL, clients, server check and error lines are in search_connect.py, the layout in
search_layout.py and its set-up in search_setup.py, request bodies in search_queries.py,
documents back to frames in search_frames.py, the change feed in search_feed.py, the counters
(aggregations as of the feed's watermark) and seen items in search_counts.py, settings versions in
search_settings.py, time-windowed scans in search_windows.py, generations in
search_generations.py, the GLM's twin in search_ranking.py; this module makes the other calls.

Every public method turns the client's errors into one-line StoreErrors saying what to fix."""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import polars as pl

from feedrank.exceptions import FeedrankError, NotFoundError, RowError, StoreError
from feedrank.store.base import Store
from feedrank.store.search_connect import (
    CLIENTS,
    BulkWriteError,
    SearchConfig,
    as_json,
    client_module,
    connect,
    explain,
    one_line,
    parse_url,
)
from feedrank.store.search_counts import Counters
from feedrank.store.search_engine import EngineRanking
from feedrank.store.search_feed import ChangeFeed
from feedrank.store.search_frames import (
    EVENT_SOURCE,
    ITEM_SOURCE,
    attr_schema,
    events_frame,
    items_frame,
    us,
    users_frame,
)
from feedrank.store.search_generations import GenerationStore
from feedrank.store.search_layout import (
    EMBEDDING,
    Flavor,
    Names,
    expired_event_indices,
    month_expr,
    vector_mapping,
)
from feedrank.store.search_queries import (
    MAX_TERMS,
    PAGE,
    event_actions,
    event_doc_ids,
    events_query,
    exact_cosine_body,
    item_actions,
    key_id,
    knn_body,
    source_filter,
    user_actions,
    user_query,
)
from feedrank.store.search_settings import SettingsVersions
from feedrank.store.search_setup import LayoutSetup
from feedrank.store.search_windows import WindowedScan

# Sort keys of one user's events: time, arrival, then the natural key, so that search_after
# pages never skip or repeat an event.
EVENT_ORDER = [{k: "asc"} for k in ("ts_us", "seq", "user_id", "item_id", "type")]
# Events per block of the change feed: a block is reserved, written, refreshed and published
# well within the feed lease (search_feed.py).
FEED_BLOCK = 50_000


class SearchStore(
    LayoutSetup,
    ChangeFeed,
    Counters,
    WindowedScan,
    SettingsVersions,
    GenerationStore,
    EngineRanking,
    Store,
):
    def __init__(self, config: SearchConfig, client: Any = None) -> None:
        self.config = config
        self.flavor: Flavor = config.flavor
        self.names = Names(config.prefix)
        self.url = f"{config.flavor}+{config.host_url}/?prefix={config.prefix}"
        mod = client_module(config.flavor)
        self._client_version: str = getattr(mod, "__versionstr__", "0")
        self._helpers = importlib.import_module(f"{CLIENTS[config.flavor]}.helpers")
        self._not_found: type[Exception] = mod.NotFoundError
        self._conflict: type[Exception] = mod.ConflictError
        self._unreachable: type[Exception] = mod.ConnectionError
        self._transport_errors: tuple[type[Exception], ...] = (
            mod.ConnectionError,
            getattr(mod, "ApiError", mod.TransportError),
            mod.TransportError,
        )
        self.client = client if client is not None else connect(config, mod)
        try:
            self.server = self._server()
            self.vector_search = self._vector_search()
            self.ensure_layout()
        except self._transport_errors as exc:
            raise StoreError(self._explain(exc, "setting up the store")) from exc

    @classmethod
    def from_url(cls, url: str) -> SearchStore:
        return cls(parse_url(url))

    def close(self) -> None:
        self.client.close()

    def _explain(self, exc: Exception, what: str) -> str:
        return explain(exc, what, self.flavor, self.config.host_url, self.url, self._unreachable)

    def drop(self) -> None:
        """Delete every index, template and script of this store's prefix (tests, teardown)."""
        n = self.names
        for idx in self._indices(n.all_indices):
            self.client.indices.delete(index=idx)
        for fn, kw in (
            (self.client.indices.delete_index_template, {"name": n.events_template}),
            (self.client.delete_script, {"id": n.glm_script}),
        ):
            with contextlib.suppress(self._not_found):
                fn(**kw)

    def _indices(self, pattern: str) -> list[str]:
        try:
            return sorted(as_json(self.client.indices.get(index=pattern)))
        except self._not_found:
            return []

    def _attrs(self, index: str) -> dict[str, pl.DataType]:
        """The attribute columns the index's mapping knows (dynamic attrs.* fields)."""
        return attr_schema(self._properties(index))

    def _refresh(self, index: str) -> None:
        if self.config.refresh:
            with contextlib.suppress(self._not_found):
                self.client.indices.refresh(index=index)

    # -- bulk ---------------------------------------------------------------------------------
    def _bulk(
        self, actions: Iterable[dict[str, Any]], ids: Sequence[str], what: str
    ) -> tuple[int, int]:
        """Streams actions through the client's bulk helper (429s retried with backoff).
        Returns (written, already existing); raises BulkWriteError listing rejected docs."""
        written = existing = 0
        errors: list[tuple[str, str]] = []
        results = self._helpers.streaming_bulk(
            self.client,
            actions,
            chunk_size=1000,
            max_retries=3,
            initial_backoff=1,
            raise_on_error=False,
            yield_ok=True,
        )
        try:
            for ok, item in results:
                op, info = next(iter(item.items()))
                if ok:
                    written += info.get("result") != "noop"
                elif op == "create" and info.get("status") == 409:
                    existing += 1
                else:
                    reason = info.get("error", {})
                    if isinstance(reason, dict):
                        reason = f"{reason.get('type')}: {reason.get('reason')}"
                    errors.append((str(info.get("_id")), str(reason)))
        except self._transport_errors as exc:
            raise StoreError(f"bulk write of {what} to {self.url} failed: {exc}") from exc
        if errors:
            line = {i: n + 1 for n, i in enumerate(ids)}
            raise BulkWriteError(
                [
                    RowError(line.get(i), "_id", f"{what} '{i}' was rejected: {r}", self.url)
                    for i, r in errors
                ],
                written,
            )
        return written, existing

    # -- writes -------------------------------------------------------------------------------
    # Events, items and erasures go through the change feed (search_feed.py): each write holds a
    # reserved block of numbers, is refreshed, then published, whatever `refresh` says.
    def upsert_users(self, users: pl.DataFrame) -> int:
        if users.is_empty():
            return 0
        users = users.unique("user_id", keep="last", maintain_order=True)
        self._require(self.names.users)
        self._bulk(user_actions(users, self.names), users["user_id"].to_list(), "user")
        self._refresh(self.names.users)
        return users.height

    def upsert_items(self, items: pl.DataFrame) -> int:
        if items.is_empty():
            return 0
        items = items.unique("item_id", keep="last", maintain_order=True)
        self._require(self.names.items)
        if EMBEDDING in items.columns:
            self._ensure_vector_field(items[EMBEDDING])

        def write(seq: int) -> None:  # one number for the whole upsert, as SQLite's items_seq
            try:
                self._bulk(item_actions(items, self.names, seq), items["item_id"].to_list(), "item")
            finally:
                self.client.indices.refresh(index=self.names.items)

        self._in_block(1, write, self._move_items)
        return items.height

    def _move_items(self, lo: int, hi: int, shift: int) -> None:
        self._move(self.names.items, lo, hi, shift)

    def _move_events(self, lo: int, hi: int, shift: int) -> None:
        self._move(self.names.events_pattern, lo, hi, shift)

    def _ensure_vector_field(self, vectors: pl.Series) -> None:
        lengths = vectors.drop_nulls().list.len().unique().to_list()
        if not lengths:
            return
        if len(lengths) > 1:
            raise StoreError(f"item embeddings must all have one length; got lengths {lengths}")
        props = self._properties(self.names.items)
        if EMBEDDING in props:
            have = props[EMBEDDING].get("dims", props[EMBEDDING].get("dimension"))
            if have != lengths[0]:
                raise StoreError(
                    f"item embeddings must have the index's dimension {have}; got {lengths[0]}"
                )
            return
        self.client.indices.put_mapping(
            index=self.names.items,
            body={
                "properties": {
                    EMBEDDING: vector_mapping(self.flavor, lengths[0], self.vector_search == "knn")
                }
            },
        )

    def add_events(self, events: pl.DataFrame) -> int:
        if events.is_empty():
            return 0
        lines = event_doc_ids(events).to_list()  # rejected documents are named by input line
        # The SQLite store's order: by user, time, item, type (its key); the first of a repeated
        # event wins and events numbered in this order keep equal timestamps in the same order.
        events = events.sort("user_id", "timestamp", "item_id", "type", maintain_order=True)
        events = events.with_columns(__id=event_doc_ids(events))
        events = events.unique("__id", keep="first", maintain_order=True)
        # An event_id already stored in another month's index (its timestamp changed) is the
        # same event: the create below only sees its own monthly index, so look across all.
        with_id = events.filter(pl.col("event_id").is_not_null())["__id"].to_list()
        stored = self._existing_event_ids(with_id)
        if stored:
            events = events.filter(~pl.col("__id").is_in(list(stored)))
        written, rejected = 0, list[RowError]()
        for start in range(0, events.height, FEED_BLOCK):
            block = events.slice(start, FEED_BLOCK)
            try:
                write = functools.partial(self._write_events, block, lines=lines)
                written += self._in_block(block.height, write, self._move_events)
            except BulkWriteError as exc:  # the rest of the frame is written all the same
                written += exc.written
                rejected += exc.errors
        if rejected:
            raise BulkWriteError(rejected, written)
        return written

    def _write_events(self, block: pl.DataFrame, seq0: int, *, lines: Sequence[str]) -> int:
        months = block.select(month_expr(pl.col("timestamp")).unique())["timestamp"].to_list()
        try:
            written, _ = self._bulk(
                event_actions(block.drop("__id"), self.names, seq0), lines, "event"
            )
        finally:  # what was written is visible before the block is published
            indices = ",".join(self.names.events_index(m) for m in sorted(months))
            with contextlib.suppress(self._not_found):
                self.client.indices.refresh(index=indices)
        return written

    def _existing_event_ids(self, ids: list[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(ids), MAX_TERMS):
            chunk = ids[i : i + MAX_TERMS]
            body = {"query": {"ids": {"values": chunk}}, "_source": False, "size": len(chunk)}
            resp = self._search(self.names.events_pattern, body)
            found.update(h["_id"] for h in resp["hits"]["hits"])
        return found

    # -- reads --------------------------------------------------------------------------------
    def _search(self, index: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        """A search; the store's own indices must exist (a pattern matching none is empty)."""
        try:
            return dict(as_json(self.client.search(index=index, body=body, **kw)))
        except self._not_found as exc:
            raise self._missing(index, exc) from exc

    def _missing(self, index: str, exc: Exception | None = None) -> StoreError:
        why = f" ({one_line(exc)})" if exc is not None else ""
        return StoreError(
            f"index '{index}' must exist on {self.config.host_url}; it does not{why}: open the "
            "store again to create its indices, or check the URL's prefix"
        )

    def _require(self, index: str) -> None:
        """Before writing into one of the store's fixed indices: the engines would create a
        missing one on the fly, without the store's mapping."""
        if not self.client.indices.exists(index=index):
            raise self._missing(index)

    def _scan(
        self,
        index: str,
        query: dict[str, Any],
        fields: list[str] | None,
        sort: list[dict[str, str]] | None = None,
        **kw: Any,
    ) -> Iterator[dict[str, Any]]:
        """Every matching document's _source. One bounded search when they fit in a page (the
        request path: no scroll context per request); beyond a page, search_after pages by
        `sort` when given, else a scroll (batch reads: one consistent snapshot)."""
        body: dict[str, Any] = {"query": query, "size": PAGE, "sort": sort or ["_doc"]}
        if fields is not None:
            body["_source"] = source_filter(fields, self.server.excludes_vectors)
        hits = self._search(index, body, **kw)["hits"]["hits"]
        if len(hits) < PAGE or sort is not None:
            while True:
                yield from (h["_source"] for h in hits)
                if len(hits) < PAGE:
                    return
                body["search_after"] = hits[-1]["sort"]
                hits = self._search(index, body, **kw)["hits"]["hits"]
        scan_body = {k: v for k, v in body.items() if k in ("query", "_source")}
        scanned = self._helpers.scan(self.client, query=scan_body, index=index, size=5000, **kw)
        try:
            for hit in scanned:
                yield hit["_source"]
        except self._not_found:
            return

    def users(self, user_ids: Sequence[str] | None = None) -> pl.DataFrame:
        rows = list(self._scan_ids(self.names.users, "user_id", user_ids, None))
        return users_frame(rows, self._attrs(self.names.users))

    def items(self, item_ids: Sequence[str] | None = None) -> pl.DataFrame:
        rows = list(self._scan_ids(self.names.items, "item_id", item_ids, ITEM_SOURCE))
        return items_frame(rows, self._attrs(self.names.items))

    def _scan_ids(
        self, index: str, field: str, ids: Sequence[str] | None, source: list[str] | None
    ) -> Iterator[dict[str, Any]]:
        if ids is None:
            yield from self._scan(index, {"match_all": {}}, source)
            return
        ids = list(ids)
        for i in range(0, len(ids), MAX_TERMS):
            yield from self._scan(index, {"terms": {field: ids[i : i + MAX_TERMS]}}, source)

    def events(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        user_ids: Sequence[str] | None = None,
        types: Sequence[str] | None = None,
    ) -> pl.DataFrame:
        if user_ids is None:  # the whole table: time windows
            return super().events(start, end, types=types)
        if not user_ids or (types is not None and not types):
            return events_frame([])
        lo = us(start) if start is not None else None
        hi = us(end) if end is not None else None
        ids = list(user_ids)
        rows: list[dict[str, Any]] = []
        for i in range(0, len(ids), MAX_TERMS):
            chunk = ids[i : i + MAX_TERMS]
            # One user: route to the one shard per month that holds their events.
            kw = {"routing": chunk[0]} if len(chunk) == 1 else {}
            query = events_query(lo, hi, chunk, types)
            # Sorted pages, never a scroll (a request's history).
            rows.extend(
                self._scan(self.names.events_pattern, query, EVENT_SOURCE, EVENT_ORDER, **kw)
            )
        return events_frame(rows)

    def delete_user(self, user_id: str) -> dict[str, int]:
        """Events, recommendations in every generation, and the profile go; the erasure is a
        block of the change feed (its counters are aggregations of the events: they follow)."""
        n, q = self.names, {"query": user_query(user_id)}

        def erase(_: int) -> dict[str, int]:
            events = self._delete_by_query(n.events_pattern, q)
            recs = 0
            for doc in self._scan(n.recs_pattern, user_query(user_id), ["ranks"]):
                recs += len(doc.get("ranks") or [])
            self._delete_by_query(n.recs_pattern, q)
            try:
                self.client.delete(index=n.users, id=key_id(user_id), refresh="true")
                users = 1
            except self._not_found:
                users = 0
            return {"events": events, "recommendations": recs, "users": users}

        return self._in_block(1, erase, None, erasure=True)

    def _delete_by_query(self, index: str, body: dict[str, Any]) -> int:
        try:
            resp = as_json(
                self.client.delete_by_query(
                    index=index, body=body, refresh=True, conflicts="proceed"
                )
            )
        except self._not_found:
            return 0
        return int(resp.get("deleted", 0))

    # -- similar items (the engine's kNN, or an exact cosine) -------------------------------------
    def _item_vector(self, item_id: str) -> list[float] | None:
        """The item's embedding, read where the engine keeps it (a search, which can ask
        Elasticsearch 9.2+ for the vectors it leaves out of _source); NotFoundError if no item."""
        body = {
            "query": {"ids": {"values": [key_id(item_id)]}},
            "size": 1,
            "_source": source_filter(["item_id", EMBEDDING], self.server.excludes_vectors),
        }
        hits = self._search(self.names.items, body)["hits"]["hits"]
        if not hits:
            raise NotFoundError(f"item '{item_id}' does not exist")
        vector: list[float] | None = hits[0]["_source"].get(EMBEDDING)
        return vector

    def _similar_body(self, vector: Sequence[float], k: int) -> dict[str, Any]:
        if self.vector_search == "knn":
            return knn_body(self.flavor, vector, k)
        return exact_cosine_body(self.flavor, vector, k)

    # -- housekeeping -------------------------------------------------------------------------
    def _count(self, index: str) -> int:
        try:
            return int(as_json(self.client.count(index=index))["count"])
        except self._not_found as exc:
            raise self._missing(index, exc) from exc

    def stats(self) -> dict[str, Any]:
        """From the counters (aggregations as of the watermark): no event is read."""
        return {
            "store": self.url,
            "server": f"{self.flavor} {'.'.join(map(str, self.server.version))}",
            "similar_items": self.vector_search,  # knn (the engine's HNSW) or exact (cosine)
            "users": self._count(self.names.users),
            "items": self._count(self.names.items),
            **self._event_stats(),
        }

    def apply_retention(self, now: datetime | None = None) -> list[str]:
        """Drop monthly event indices older than retention_months; returns what was dropped."""
        months = self.config.retention_months
        if months is None:
            return []
        now = now or datetime.now(UTC)
        expired = expired_event_indices(
            self.names, self._indices(self.names.events_pattern), now, months
        )
        if not expired:
            return []

        def drop(_: int) -> None:
            for index in expired:
                self.client.indices.delete(index=index)

        # Events left the counters: followers of the change feed read them again, as after an
        # erasure.
        self._in_block(1, drop, None, erasure=True)
        return expired


_F = TypeVar("_F", bound=Callable[..., Any])
# The store's public methods: each turns a client error into one StoreError line.
GUARDED = (
    "upsert_users",
    "upsert_items",
    "add_events",
    "users",
    "items",
    "events",
    "scan_events",
    "item_counts",
    "user_counts",
    "watermark",
    "changes",
    "seen_items",
    "delete_user",
    "write_generation",
    "activate_generation",
    "generations",
    "recommendations",
    "stats",
    "put_settings",
    "settings_versions",
    "stored_settings",
    "apply_retention",
    "drop",
    "publish_item_features",
    "glm_recommend",
    "similar_items",
)


_calls = threading.local()  # the public call in progress on this thread, if any


def _guard(name: str, fn: _F) -> _F:
    """The error line names the public call the caller made (a call made inside another, say
    changes() reading the watermark, lets its error through to the outer one)."""
    what = name.replace("_", " ")

    if inspect.isgeneratorfunction(fn):  # scan_events: errors come while iterating

        @functools.wraps(fn)
        def scanning(self: SearchStore, *args: Any, **kw: Any) -> Iterator[Any]:
            try:
                yield from fn(self, *args, **kw)
            except FeedrankError:
                raise
            except self._transport_errors as exc:
                if getattr(_calls, "active", False):  # read inside another call: it names it
                    raise
                raise StoreError(self._explain(exc, what)) from exc

        return scanning  # type: ignore[return-value]

    @functools.wraps(fn)
    def guarded(self: SearchStore, *args: Any, **kw: Any) -> Any:
        if getattr(_calls, "active", False):
            return fn(self, *args, **kw)
        _calls.active = True
        try:
            return fn(self, *args, **kw)
        except FeedrankError:
            raise
        except self._transport_errors as exc:
            raise StoreError(self._explain(exc, what)) from exc
        finally:
            _calls.active = False

    return guarded  # type: ignore[return-value]


for _name in GUARDED:
    setattr(SearchStore, _name, _guard(_name, getattr(SearchStore, _name)))


class ElasticsearchStore(SearchStore):
    """`elasticsearch+http(s)://...` (client: pip install 'feedrank[elasticsearch]')."""


class OpenSearchStore(SearchStore):
    """`opensearch+http(s)://...` (client: pip install 'feedrank[opensearch]')."""


__all__ = [
    "BulkWriteError",
    "ElasticsearchStore",
    "OpenSearchStore",
    "SearchConfig",
    "SearchStore",
    "parse_url",
]
