"""The Elasticsearch/OpenSearch store: the Store protocol on a search engine, plus ranking
inside it (precomputed top-K through an alias, the GLM as a painless script, kNN similar items).

    elasticsearch+http(s)://[user:password@]host[:port][/?prefix=feedrank_&...]
    opensearch+http(s)://...

Query options: prefix (index-name prefix), refresh (true: reads see writes at once, the
Store contract; false: bulk loads, refresh later), shards, replicas, retention_months,
verify_certs, ca_certs, api_key, timeout. The URL and clients are in search_connect.py, the
layout in search_layout.py, request bodies in search_queries.py, documents back to frames in
search_frames.py, the GLM's split in search_ranking.py; this module makes the calls."""

from __future__ import annotations

import contextlib
import importlib
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import polars as pl

from feedrank.exceptions import NotFoundError, RowError, StoreError
from feedrank.store.base import RECOMMENDATION_COLUMNS, Generation, Store
from feedrank.store.search_connect import (
    CLIENTS,
    BulkWriteError,
    SearchConfig,
    as_json,
    client_module,
    connect,
    parse_url,
)
from feedrank.store.search_engine import EngineRanking
from feedrank.store.search_frames import (
    EVENT_SOURCE,
    ITEM_SOURCE,
    STATS_AGGS,
    attr_schema,
    event_stats,
    events_frame,
    items_frame,
    recommendations_frame,
    us,
    users_frame,
)
from feedrank.store.search_layout import (
    EMBEDDING,
    Flavor,
    Names,
    events_template_body,
    expired_event_indices,
    index_body,
    items_mapping,
    meta_mapping,
    recs_mapping,
    swap_alias_actions,
    users_mapping,
    vector_mapping,
)
from feedrank.store.search_queries import (
    GLM_SCRIPT_SOURCE,
    MAX_TERMS,
    event_actions,
    event_doc_ids,
    events_query,
    item_actions,
    key_id,
    recommendation_actions,
    stored_script_body,
    user_actions,
    user_query,
)


class SearchStore(EngineRanking, Store):
    def __init__(self, config: SearchConfig, client: Any = None) -> None:
        self.config = config
        self.flavor: Flavor = config.flavor
        self.names = Names(config.prefix)
        self.url = f"{config.flavor}+{config.host_url}/?prefix={config.prefix}"
        mod = client_module(config.flavor)
        self._helpers = importlib.import_module(f"{CLIENTS[config.flavor]}.helpers")
        self._not_found: type[Exception] = mod.NotFoundError
        self._conflict: type[Exception] = mod.ConflictError
        self._transport_errors: tuple[type[Exception], ...] = (
            mod.ConnectionError,
            getattr(mod, "ApiError", mod.TransportError),
            mod.TransportError,
        )
        self.client = client if client is not None else connect(config, mod)
        self._seq = time.time_ns() // 1000 * 1000  # arrival order among equal timestamps
        try:
            self.ensure_layout()
        except self._transport_errors as exc:
            raise StoreError(f"cannot set up the {self.flavor} store at {self.url}: {exc}") from exc

    @classmethod
    def from_url(cls, url: str) -> SearchStore:
        return cls(parse_url(url))

    def close(self) -> None:
        self.client.close()

    # -- layout -------------------------------------------------------------------------------
    def ensure_layout(self) -> None:
        """Create what is missing (idempotent): indices, the events template, stored scripts."""
        c, n, f = self.config, self.names, self.flavor
        # Compiled now, in the score context, so a script error shows at setup, not at serving.
        self.client.put_script(
            id=n.glm_script, body=stored_script_body(GLM_SCRIPT_SOURCE), context="score"
        )
        self.client.indices.put_index_template(
            name=n.events_template, body=events_template_body(n, f, c.shards, c.replicas)
        )
        for index, mapping, knn in (
            (n.items, items_mapping(f), True),
            (n.users, users_mapping(), False),
            (n.meta, meta_mapping(), False),
        ):
            if not self.client.indices.exists(index=index):
                self._create_index(index, index_body(mapping, f, c.shards, c.replicas, knn))

    def _create_index(self, index: str, body: dict[str, Any]) -> bool:
        """False when it already exists (another process created it first)."""
        try:
            self.client.indices.create(index=index, body=body)
        except self._transport_errors as exc:
            if "resource_already_exists" in str(exc):
                return False
            raise
        return True

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
        try:
            mapping = as_json(self.client.indices.get_mapping(index=index))
        except self._not_found:
            return {}
        props = next(iter(mapping.values()), {}).get("mappings", {}).get("properties", {})
        return attr_schema(props)

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
    def upsert_users(self, users: pl.DataFrame) -> int:
        if users.is_empty():
            return 0
        users = users.unique("user_id", keep="last", maintain_order=True)
        self._bulk(user_actions(users, self.names), users["user_id"].to_list(), "user")
        self._refresh(self.names.users)
        return users.height

    def upsert_items(self, items: pl.DataFrame) -> int:
        if items.is_empty():
            return 0
        items = items.unique("item_id", keep="last", maintain_order=True)
        if EMBEDDING in items.columns:
            self._ensure_vector_field(items[EMBEDDING])
        self._bulk(item_actions(items, self.names), items["item_id"].to_list(), "item")
        self._refresh(self.names.items)
        return items.height

    def _ensure_vector_field(self, vectors: pl.Series) -> None:
        lengths = vectors.drop_nulls().list.len().unique().to_list()
        if not lengths:
            return
        if len(lengths) > 1:
            raise StoreError(f"item embeddings must all have one length; got lengths {lengths}")
        mapping = as_json(self.client.indices.get_mapping(index=self.names.items))
        props = next(iter(mapping.values()))["mappings"].get("properties", {})
        if EMBEDDING in props:
            have = props[EMBEDDING].get("dims", props[EMBEDDING].get("dimension"))
            if have != lengths[0]:
                raise StoreError(
                    f"item embeddings must have the index's dimension {have}; got {lengths[0]}"
                )
            return
        self.client.indices.put_mapping(
            index=self.names.items,
            body={"properties": {EMBEDDING: vector_mapping(self.flavor, lengths[0])}},
        )

    def add_events(self, events: pl.DataFrame) -> int:
        if events.is_empty():
            return 0
        ids = event_doc_ids(events)
        events = events.with_columns(__id=ids).unique("__id", keep="first", maintain_order=True)
        # An event_id already stored in another month's index (its timestamp changed) is the
        # same event: the create below only sees its own monthly index, so look across all.
        with_id = events.filter(pl.col("event_id").is_not_null())["__id"].to_list()
        stored = self._existing_event_ids(with_id)
        if stored:
            events = events.filter(~pl.col("__id").is_in(list(stored)))
        if events.is_empty():
            return 0
        self._seq += events.height
        written, _ = self._bulk(
            event_actions(events.drop("__id"), self.names, self._seq - events.height),
            events["__id"].to_list(),
            "event",
        )
        self._refresh(self.names.events_pattern)
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
        try:
            return dict(as_json(self.client.search(index=index, body=body, **kw)))
        except self._not_found:
            return {"hits": {"hits": [], "total": {"value": 0}}, "aggregations": {}}

    def _scan(
        self, index: str, query: dict[str, Any], fields: list[str] | None, **kw: Any
    ) -> Iterator[dict[str, Any]]:
        body: dict[str, Any] = {"query": query}
        if fields is not None:
            body["_source"] = fields
        hits = self._helpers.scan(self.client, query=body, index=index, size=5000, **kw)
        try:
            for hit in hits:
                yield hit["_source"]
        except self._not_found:
            return

    def users(self) -> pl.DataFrame:
        return users_frame(list(self._scan(self.names.users, {"match_all": {}}, None)))

    def items(self) -> pl.DataFrame:
        return items_frame(list(self._scan(self.names.items, {"match_all": {}}, ITEM_SOURCE)))

    def events(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        user_ids: Sequence[str] | None = None,
        types: Sequence[str] | None = None,
    ) -> pl.DataFrame:
        if (user_ids is not None and not user_ids) or (types is not None and not types):
            return events_frame([])
        lo = us(start) if start is not None else None
        hi = us(end) if end is not None else None
        chunks: list[Sequence[str] | None] = (
            [None]
            if user_ids is None
            else [list(user_ids)[i : i + MAX_TERMS] for i in range(0, len(user_ids), MAX_TERMS)]
        )
        rows: list[dict[str, Any]] = []
        for chunk in chunks:
            # One user: route to the one shard per month that holds their events.
            kw = {"routing": chunk[0]} if chunk is not None and len(chunk) == 1 else {}
            query = events_query(lo, hi, chunk, types)
            rows.extend(self._scan(self.names.events_pattern, query, EVENT_SOURCE, **kw))
        return events_frame(rows)

    def user_history(self, user_id: str, limit: int | None = None) -> pl.DataFrame:
        """Newest first; with a limit, one routed search sorted by time returns just those."""
        if limit is None or limit > 10_000:
            return super().user_history(user_id, limit)
        request = {
            "query": user_query(user_id),
            "sort": [{"ts_us": "desc"}, {"seq": "desc"}],
            "size": limit,
            "_source": EVENT_SOURCE,
        }
        hits = self._search(self.names.events_pattern, request, routing=user_id)["hits"]["hits"]
        return events_frame([h["_source"] for h in hits]).reverse()

    def delete_user(self, user_id: str) -> dict[str, int]:
        n, q = self.names, {"query": user_query(user_id)}
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

    # -- generations --------------------------------------------------------------------------
    def write_generation(self, recs: pl.DataFrame, model: str, activate: bool = True) -> int:
        recs = recs.select(
            [
                pl.col(c).cast(t) if c in recs.columns else pl.lit(None, t).alias(c)
                for c, t in RECOMMENDATION_COLUMNS.items()
            ]
        )
        n, c = self.names, self.config
        gen = self._max_generation() + 1
        # Creating the index reserves the id: a concurrent writer that picked the same one fails.
        while not self._create_index(
            n.recs_index(gen), index_body(recs_mapping(), self.flavor, c.shards, c.replicas)
        ):
            gen += 1
        users = recs["user_id"].unique(maintain_order=True).to_list()
        self._bulk(recommendation_actions(recs, n.recs_index(gen)), users, "recommendation")
        self.client.indices.refresh(index=n.recs_index(gen))
        meta = {
            "id": gen,
            "model": model,
            "created_at_us": time.time_ns() // 1000,
            "n_users": len(users),
            "n_rows": recs.height,
            "deleted": False,
        }
        self.client.index(index=n.meta, id=f"gen-{gen}", body=meta, refresh="true")
        if activate:
            self.activate_generation(gen)
        return gen

    def _max_generation(self) -> int:
        ids = [
            g for i in self._indices(self.names.recs_pattern) if (g := self.names.generation_of(i))
        ]
        body = {"size": 1, "sort": [{"id": "desc"}], "_source": ["id"]}
        hits = self._search(self.names.meta, body)["hits"]["hits"]
        ids += [int(h["_source"]["id"]) for h in hits]
        return max(ids, default=0)

    def _meta(self, deleted: bool = False) -> list[dict[str, Any]]:
        body = {
            "size": 10_000,
            "query": {"term": {"deleted": deleted}},
            "sort": [{"id": "asc"}],
        }
        return [h["_source"] for h in self._search(self.names.meta, body)["hits"]["hits"]]

    def _active_index(self) -> str | None:
        try:
            found = as_json(self.client.indices.get_alias(name=self.names.recs_alias))
        except self._not_found:
            return None
        return next(iter(found), None)

    def activate_generation(self, generation_id: int) -> None:
        n = self.names
        known = {int(m["id"]) for m in self._meta()}
        index = n.recs_index(generation_id)
        if generation_id not in known or not self.client.indices.exists(index=index):
            raise NotFoundError(f"generation {generation_id} does not exist")
        previous = self._active_index()
        self.client.indices.update_aliases(body=swap_alias_actions(n.recs_alias, index, previous))
        # Keep the new one, the one it replaces (rollback) and any newer one not yet activated.
        prev_id = n.generation_of(previous) if previous else None
        for m in self._meta():
            g = int(m["id"])
            if g in (generation_id, prev_id) or g > generation_id:
                continue
            with contextlib.suppress(self._not_found):
                self.client.indices.delete(index=n.recs_index(g))
            self.client.update(
                index=n.meta, id=f"gen-{g}", body={"doc": {"deleted": True}}, refresh="true"
            )

    def generations(self) -> list[Generation]:
        active = self._active_index()
        active_id = self.names.generation_of(active) if active else None
        return [
            Generation(
                id=int(m["id"]),
                model=m["model"],
                created_at=datetime.fromtimestamp(m["created_at_us"] / 1e6, tz=UTC),
                n_users=int(m["n_users"]),
                n_rows=int(m["n_rows"]),
                active=int(m["id"]) == active_id,
            )
            for m in self._meta()
        ]

    def recommendations(self, user_id: str, k: int | None = None) -> pl.DataFrame:
        # One realtime GET through the alias: the document is one generation's, whole.
        try:
            doc = as_json(self.client.get(index=self.names.recs_alias, id=key_id(user_id)))
        except self._not_found:
            return recommendations_frame(None)
        return recommendations_frame(doc["_source"], k)

    # -- housekeeping -------------------------------------------------------------------------
    def _count(self, index: str) -> int:
        try:
            return int(as_json(self.client.count(index=index))["count"])
        except self._not_found:
            return 0

    def stats(self) -> dict[str, Any]:
        request = {"size": 0, "aggs": STATS_AGGS}
        aggs = self._search(self.names.events_pattern, request).get("aggregations") or {}
        return {
            "store": self.url,
            "users": self._count(self.names.users),
            "items": self._count(self.names.items),
            **event_stats(aggs),
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
        for index in expired:
            self.client.indices.delete(index=index)
        return expired


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
