"""Counters of the Elasticsearch/OpenSearch store, mixed into SearchStore: events per (item, type,
value), per (user, type, value) with first and last time, the stats built on them, and a user's
seen items, all answered by the engine's aggregations — no event document leaves the server.

Counters are computed, not kept: a composite aggregation over the events whose change-feed
number is at or below the watermark. That makes them exactly the counters *as of the
watermark*: a server that reads them and then applies `changes(watermark)` counts every event
once, however writers interleave (documents written but not yet published are not counted), and
an erased user's events leave them as the events are deleted. docs/elasticsearch.md has the
measurements behind the choice (counter documents updated at write time halved the import rate
and could not be tied to a watermark).

Request bodies and the parsing of buckets are pure functions, unit-tested without a server."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import polars as pl

from feedrank.store.base import ITEM_COUNT_COLUMNS, USER_COUNT_COLUMNS, Watermark
from feedrank.store.search_frames import event_stats
from feedrank.store.search_layout import Names
from feedrank.store.search_queries import MAX_TERMS

# Buckets per composite page: one page holds a small site's counters (the engines' default
# search.max_buckets is 65,535); a larger one takes a few pages.
COMPOSITE_PAGE = 50_000
ITEM_KEYS = ("item_id", "type", "value")
USER_KEYS = ("user_id", "type", "value")


def counted(upto: int, *more: dict[str, Any]) -> dict[str, Any]:
    """The events the counters count: published up to the watermark `upto`, and `more`."""
    return {"bool": {"filter": [{"range": {"seq": {"lte": upto}}}, *more]}}


def composite_body(
    query: dict[str, Any],
    keys: Sequence[str],
    metrics: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    size: int = COMPOSITE_PAGE,
) -> dict[str, Any]:
    comp: dict[str, Any] = {"size": size, "sources": [{k: {"terms": {"field": k}}} for k in keys]}
    if after is not None:
        comp["after"] = after
    agg: dict[str, Any] = {"composite": comp}
    if metrics:
        agg["aggs"] = metrics
    return {"size": 0, "query": query, "aggs": {"c": agg}}


USER_METRICS = {"first": {"min": {"field": "ts_us"}}, "last": {"max": {"field": "ts_us"}}}


def item_counts_frame(buckets: Sequence[dict[str, Any]]) -> pl.DataFrame:
    rows = [
        (b["key"]["item_id"], b["key"]["type"], b["key"]["value"], b["doc_count"]) for b in buckets
    ]
    return pl.DataFrame(rows, schema=dict(ITEM_COUNT_COLUMNS), orient="row")


def user_counts_frame(buckets: Sequence[dict[str, Any]]) -> pl.DataFrame:
    rows = [
        (
            b["key"]["user_id"],
            b["key"]["type"],
            b["key"]["value"],
            b["doc_count"],
            int(b["first"]["value"]),
            int(b["last"]["value"]),
        )
        for b in buckets
    ]
    schema = {**USER_COUNT_COLUMNS, "first_ts": pl.Int64(), "last_ts": pl.Int64()}
    df = pl.DataFrame(rows, schema=schema, orient="row")
    return df.with_columns(
        pl.col(c).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
        for c in ("first_ts", "last_ts")
    )


def stats_body(upto: int) -> dict[str, Any]:
    return {
        "size": 0,
        "query": counted(upto),
        "aggs": {
            "types": {"terms": {"field": "type", "size": MAX_TERMS}},
            "first": {"min": {"field": "ts_us"}},
            "last": {"max": {"field": "ts_us"}},
        },
    }


def seen_body(user_id: str, after: dict[str, Any] | None = None) -> dict[str, Any]:
    """One routed search for a user's seen items: the items of their events but impressions
    (a composite page of item ids: a composite must be a top-level aggregation, so the query
    holds that filter) and the time of their newest event of any type (under `global`, which
    ignores the query but not the routing)."""
    user = {"term": {"user_id": user_id}}
    not_seen = [{"term": {"type": "impression"}}, {"term": {"item_id": ""}}]
    body = composite_body(
        {"bool": {"filter": [user], "must_not": not_seen}}, ["item_id"], after=after, size=MAX_TERMS
    )
    body["aggs"]["all"] = {
        "global": {},
        "aggs": {"user": {"filter": user, "aggs": {"newest": {"max": {"field": "ts_us"}}}}},
    }
    return body


class Counters:
    """Needs the store's client, names and helpers (declared here for the type checker)."""

    if TYPE_CHECKING:
        names: Names

        def _search(self, index: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]: ...

        def watermark(self) -> Watermark: ...

    def _buckets(
        self,
        query: dict[str, Any],
        keys: Sequence[str],
        metrics: dict[str, Any] | None = None,
        **kw: Any,
    ) -> Iterator[dict[str, Any]]:
        """Every bucket of a composite aggregation over the events, page by page."""
        after = None
        while True:
            body = composite_body(query, keys, metrics, after)
            resp = self._search(self.names.events_pattern, body, **kw)
            agg = (resp.get("aggregations") or {}).get("c") or {}
            buckets = agg.get("buckets") or []
            yield from buckets
            after = agg.get("after_key")
            if after is None or len(buckets) < COMPOSITE_PAGE:
                return

    def item_counts(self) -> pl.DataFrame:
        query = counted(self.watermark().events)
        query["bool"]["must_not"] = [{"term": {"item_id": ""}}]
        return item_counts_frame(list(self._buckets(query, ITEM_KEYS)))

    def user_counts(self, user_ids: Sequence[str] | None = None) -> pl.DataFrame:
        upto = self.watermark().events
        if user_ids is None:
            return user_counts_frame(list(self._buckets(counted(upto), USER_KEYS, USER_METRICS)))
        ids = list(dict.fromkeys(user_ids))
        buckets: list[dict[str, Any]] = []
        for i in range(0, len(ids), MAX_TERMS):
            chunk = ids[i : i + MAX_TERMS]
            query = counted(upto, {"terms": {"user_id": chunk}})
            kw = {"routing": chunk[0]} if len(chunk) == 1 else {}  # one user: one shard a month
            buckets.extend(self._buckets(query, USER_KEYS, USER_METRICS, **kw))
        return user_counts_frame(buckets)

    def _event_stats(self) -> dict[str, Any]:
        upto = self.watermark().events
        aggs = self._search(self.names.events_pattern, stats_body(upto)).get("aggregations") or {}
        users = sum(1 for _ in self._buckets(counted(upto), ["user_id"]))  # exact, unlike HLL
        return {"users_with_events": users, **event_stats(aggs)}

    def seen_items(self, user_id: str) -> tuple[set[str], datetime | None]:
        seen: set[str] = set()
        after = None
        while True:  # one request unless the user knows more than MAX_TERMS items
            resp = self._search(
                self.names.events_pattern, seen_body(user_id, after), routing=user_id
            )
            aggs = resp.get("aggregations") or {}
            page = aggs.get("c") or {}
            buckets = page.get("buckets") or []
            seen.update(b["key"]["item_id"] for b in buckets)
            after = page.get("after_key")
            if after is None or len(buckets) < MAX_TERMS:
                break
        newest = aggs["all"]["user"]["newest"].get("value")
        if newest is None:
            return set(), None
        t = pl.Series([int(newest)]).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")[0]
        return seen, t


__all__ = [
    "COMPOSITE_PAGE",
    "Counters",
    "composite_body",
    "counted",
    "item_counts_frame",
    "seen_body",
    "stats_body",
    "user_counts_frame",
]
