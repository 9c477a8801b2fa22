"""Reading the whole event table in time order with bounded memory: the time span is cut into
windows of at most a page of events each (a histogram of `ts_us`, split again where one bucket
holds more), each window is one bounded search sorted in Python, and the rows are handed out in
frames of exactly `batch_rows` (Rechunk). Windows tile the span (each event falls in exactly one,
whatever the histogram's rounding), so nothing is read twice or skipped.

Pure functions: the store (search.py) makes the requests."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import polars as pl

HISTOGRAM_BUCKETS = 1_000  # per level; a bucket above the budget is cut again


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


__all__ = ["Rechunk", "histogram_body", "plan_windows", "span_body", "within"]
