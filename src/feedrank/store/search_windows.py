"""Reading the whole event table in time order with bounded memory: the time span is cut into
windows of at most a page of events each (a histogram of `ts_us`, split again where one bucket
holds more), each window is one bounded search sorted in Python, and the rows are handed out in
frames of exactly `batch_rows` (Rechunk). Windows tile the span (each event falls in exactly one,
whatever the histogram's rounding), so nothing is read twice or skipped.

The planning is pure (unit-tested); WindowedScan makes the requests."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import polars as pl

from feedrank.store.search_frames import EVENT_SOURCE, events_frame, us
from feedrank.store.search_layout import Names
from feedrank.store.search_queries import PAGE, events_query

HISTOGRAM_BUCKETS = 1_000  # per level; a bucket above the budget is cut again
WINDOW_EVENTS = PAGE  # events per window: one bounded search reads it


def within(query: dict[str, Any], lo: int, hi: int) -> dict[str, Any]:
    """`query` restricted to lo <= ts_us < hi."""
    return {"bool": {"filter": [query, {"range": {"ts_us": {"gte": lo, "lt": hi}}}]}}


def span_body(query: dict[str, Any]) -> dict[str, Any]:
    return {
        "size": 0,
        "query": query,
        "aggs": {"lo": {"min": {"field": "ts_us"}}, "hi": {"max": {"field": "ts_us"}}},
    }


def histogram_body(query: dict[str, Any], lo: int, hi: int) -> tuple[dict[str, Any], int]:
    """Counts of events per bucket of [lo, hi) (buckets start at lo); returns the interval."""
    interval = max(1, math.ceil((hi - lo) / HISTOGRAM_BUCKETS))
    agg = {
        "histogram": {
            "field": "ts_us",
            "interval": interval,
            "offset": lo % interval,
            "min_doc_count": 1,
        }
    }
    return {"size": 0, "query": within(query, lo, hi), "aggs": {"h": agg}}, interval


def plan_windows(
    buckets: Sequence[tuple[int, int]], lo: int, hi: int, interval: int, budget: int
) -> list[tuple[int, int, int, bool]]:
    """(start, end, events, cut again) windows tiling [lo, hi) without gaps: consecutive buckets
    joined while their events fit the budget; a bucket over it (and wider than a microsecond)
    is a window of its own, to be cut again (narrower each time)."""
    out: list[tuple[int, int, int, bool]] = []
    start, n = lo, 0
    for key, count in sorted(buckets):
        key = min(max(key, start), hi)
        if count > budget and interval > 1:
            if start < key:
                out.append((start, key, n, False))
            end = min(key + interval, hi)
            out.append((key, end, count, True))
            start, n = end, 0
        elif n and n + count > budget:
            out.append((start, key, n, False))
            start, n = key, count
        else:
            n += count
    if start < hi:
        out.append((start, hi, n, False))
    return out


class Rechunk:
    """Frames in, frames of exactly `rows` out (the last one shorter)."""

    def __init__(self, rows: int) -> None:
        if rows < 1:
            raise ValueError(f"batch_rows must be >= 1; got {rows}")
        self.rows = rows
        self._held: list[pl.DataFrame] = []
        self._n = 0

    def add(self, frame: pl.DataFrame) -> Iterator[pl.DataFrame]:
        if frame.height:
            self._held.append(frame)
            self._n += frame.height
        while self._n >= self.rows:
            held = pl.concat(self._held)
            yield held.head(self.rows)
            rest = held.slice(self.rows)
            self._held, self._n = ([rest] if rest.height else []), rest.height

    def flush(self) -> Iterator[pl.DataFrame]:
        if self._n:
            yield pl.concat(self._held)
        self._held, self._n = [], 0


class WindowedScan:
    """scan_events, mixed into SearchStore (needs its search helpers; declared for the type
    checker)."""

    if TYPE_CHECKING:
        names: Names

        def _search(self, index: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]: ...

        def _scan(
            self, index: str, query: dict[str, Any], fields: list[str] | None, **kw: Any
        ) -> Iterator[dict[str, Any]]: ...

        def events(
            self,
            start: datetime | None = None,
            end: datetime | None = None,
            *,
            user_ids: Sequence[str] | None = None,
            types: Sequence[str] | None = None,
        ) -> pl.DataFrame: ...

    def scan_events(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        user_ids: Sequence[str] | None = None,
        types: Sequence[str] | None = None,
        batch_rows: int = 500_000,
    ) -> Iterator[pl.DataFrame]:
        chunks = Rechunk(batch_rows)
        if user_ids is not None:  # some users: their routed, sorted reads
            yield from chunks.add(self.events(start, end, user_ids=user_ids, types=types))
            yield from chunks.flush()
            return
        if types is not None and not types:
            return
        lo = us(start) if start is not None else None
        hi = us(end) if end is not None else None
        query = events_query(lo, hi, None, types)
        for wlo, whi in self._windows(query):
            rows = self._scan(self.names.events_pattern, within(query, wlo, whi), EVENT_SOURCE)
            yield from chunks.add(events_frame(list(rows)))
        yield from chunks.flush()

    def _windows(self, query: dict[str, Any]) -> Iterator[tuple[int, int]]:
        """Time windows of at most a page of events each, in order (search_windows.py)."""
        aggs = self._search(self.names.events_pattern, span_body(query)).get("aggregations")
        if not aggs or aggs["lo"].get("value") is None:
            return
        yield from self._cut(query, int(aggs["lo"]["value"]), int(aggs["hi"]["value"]) + 1)

    def _cut(self, query: dict[str, Any], lo: int, hi: int) -> Iterator[tuple[int, int]]:
        body, interval = histogram_body(query, lo, hi)
        aggs = self._search(self.names.events_pattern, body).get("aggregations") or {}
        buckets = [(round(b["key"]), int(b["doc_count"])) for b in aggs["h"]["buckets"]]
        for wlo, whi, _, again in plan_windows(buckets, lo, hi, interval, WINDOW_EVENTS):
            if again:  # one bucket over a page: cut it again (1,000 times narrower)
                yield from self._cut(query, wlo, whi)
            else:
                yield wlo, whi


__all__ = ["Rechunk", "WindowedScan", "histogram_body", "plan_windows", "span_body", "within"]
