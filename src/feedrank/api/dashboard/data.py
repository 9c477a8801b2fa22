"""What the dashboard reads, and how often. A page view never reads the whole event table:

- `DailyCounts` keeps events per (day, type) and the users and items active per day, read once
  from the store's change feed and then followed incrementally (only what is new since its
  watermark; an erasure makes it read again);
- `Jobs` runs the analyses that need the events themselves (A/B reports, off-policy estimates,
  insights) in one background thread, over a snapshot of the last WINDOW_DAYS of events taken at
  most once per ANALYSIS_SECONDS; a page shows the newest finished result (and says when it
  is being computed) instead of waiting for it;
- `TTLCache` keeps cheap page parts (the registry, the user list) for a few seconds.

Everything here lives on one `Dashboard` object in app.state (no module-level state)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

import polars as pl

from feedrank.api.dashboard.access import Sessions
from feedrank.store import Store
from feedrank.store.base import Watermark
from feedrank.views.site import SiteData

T = TypeVar("T")
WINDOW_DAYS = 35  # the analyses' window of events (and the overview's chart)
ANALYSIS_SECONDS = 60.0  # the analyses' data is at most this old (when the store moved)
CACHE_SECONDS = 5.0
FEED_BATCH = 200_000


class TTLCache:
    def __init__(self, max_age: float = CACHE_SECONDS) -> None:
        self.max_age = max_age
        self._d: dict[Any, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: Any, compute: Callable[[], T], max_age: float | None = None) -> T:
        now = time.monotonic()
        with self._lock:
            hit = self._d.get(key)
        if hit is not None and now - hit[0] < (max_age or self.max_age):
            return hit[1]  # type: ignore[no-any-return]
        value = compute()
        with self._lock:
            self._d[key] = (now, value)
            if len(self._d) > 256:  # small: page parts, not data
                self._d.pop(next(iter(self._d)))
        return value


def _day(col: str = "timestamp") -> pl.Expr:
    return pl.col(col).dt.truncate("1d").dt.date().alias("day")


class DailyCounts:
    """Events per (day, type), and distinct users and items per day, kept up to date from the
    store's change feed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.watermark: Watermark | None = None
        self.counts = pl.DataFrame(schema={"day": pl.Date, "type": pl.String, "n": pl.Int64})
        self.users = pl.DataFrame(schema={"day": pl.Date, "user_id": pl.String})
        self.items = pl.DataFrame(schema={"day": pl.Date, "item_id": pl.String})

    def _add(self, events: pl.DataFrame) -> None:
        ev = events.select(_day(), "type", "user_id", "item_id")
        per_type = ev.group_by("day", "type").agg(n=pl.len().cast(pl.Int64))
        self.counts = (
            pl.concat([self.counts, per_type]).group_by("day", "type").agg(pl.col("n").sum())
        )
        self.users = pl.concat([self.users, ev.select("day", "user_id").unique()]).unique()
        items = ev.filter(pl.col("item_id") != "").select("day", "item_id").unique()
        self.items = pl.concat([self.items, items]).unique()
        newest = self.counts["day"].max()
        if newest is not None:  # distinct sets only for the window: memory stays bounded
            start = newest - timedelta(days=WINDOW_DAYS)  # type: ignore[operator]
            self.users = self.users.filter(pl.col("day") > start)
            self.items = self.items.filter(pl.col("day") > start)

    def update(self, store: Store) -> DailyCounts:
        with self._lock:
            since = self.watermark or Watermark()
            while True:
                changes = store.changes(since, max_events=FEED_BATCH)
                if changes.erased and self.watermark is not None:
                    self._reset()  # an erased user's events left the counts: read again
                    since = Watermark()
                    continue
                if changes.events.height:
                    self._add(changes.events)
                self.watermark = since = changes.until
                if changes.events.height < FEED_BATCH:
                    return self


@dataclass
class Jobs:
    """Slow analyses in one background thread; the newest finished result per kind."""

    pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="feedrank-dashboard")
    )
    done: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # kind -> (key, result)
    running: dict[str, tuple[Any, Future[Any]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def latest(self, kind: str, key: Any, compute: Callable[[], Any]) -> tuple[bool, Any]:
        """(fresh, result): the result for `key`, or the newest older one (fresh False) while
        `key` is computed, or (False, None) before any finished. A failed computation's result
        is its exception (the page says what failed)."""
        with self.lock:
            got = self.done.get(kind)
            if got is not None and got[0] == key:
                return True, got[1]
            run = self.running.get(kind)
            if run is None or run[0] != key:
                future = self.pool.submit(self._run, kind, key, compute)
                self.running[kind] = (key, future)
            return False, (got[1] if got is not None else None)

    def _run(self, kind: str, key: Any, compute: Callable[[], Any]) -> None:
        try:
            result = compute()
        except Exception as exc:  # shown on the page as one line; the server keeps serving
            result = exc
        with self.lock:
            self.done[kind] = (key, result)
            if self.running.get(kind, (None,))[0] == key:
                del self.running[kind]

    def wait(self, timeout: float = 60.0) -> None:
        """Until nothing runs (tests and warm-ups)."""
        stop = time.monotonic() + timeout
        while time.monotonic() < stop:
            with self.lock:
                futures = [f for _, f in self.running.values()]
            if not futures:
                return
            for f in futures:
                f.result(timeout=max(0.0, stop - time.monotonic()))

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


@dataclass
class Snapshot:
    key: Watermark
    taken: float
    site: SiteData | None = None


class Dashboard:
    """The dashboard's state, one per app."""

    def __init__(self) -> None:
        self.cache = TTLCache()
        self.daily = DailyCounts()
        self.jobs = Jobs()
        self.sessions = Sessions()
        self.started = time.time()
        self._snapshot: Snapshot | None = None
        self._lock = threading.Lock()

    def data_key(self, store: Store) -> Watermark:
        """The store's watermark, moved on at most once per ANALYSIS_SECONDS: analyses keyed
        by it are recomputed at most that often, and only when something was written."""
        with self._lock:
            snap = self._snapshot
            if snap is not None and time.monotonic() - snap.taken < ANALYSIS_SECONDS:
                return snap.key
        mark = store.watermark()
        with self._lock:
            if self._snapshot is None or self._snapshot.key != mark:
                self._snapshot = Snapshot(mark, time.monotonic())
            else:
                self._snapshot.taken = time.monotonic()
            return self._snapshot.key

    def site(self, store: Store, key: Watermark) -> SiteData:
        """The last WINDOW_DAYS of events with every user and item (called in the job thread;
        read once per key and shared by the analyses)."""
        with self._lock:
            snap = self._snapshot
            if snap is not None and snap.key == key and snap.site is not None:
                return snap.site
        newest = store.stats().get("last_event")
        start = (
            datetime.fromisoformat(newest) - timedelta(days=WINDOW_DAYS)
            if isinstance(newest, str)
            else None
        )
        from feedrank.schema import empty_events

        frames = list(store.scan_events(start))
        events = pl.concat(frames, rechunk=True) if frames else empty_events()
        site = SiteData(store.users(), store.items(), events)
        with self._lock:
            if self._snapshot is not None and self._snapshot.key == key:
                self._snapshot.site = site
        return site
