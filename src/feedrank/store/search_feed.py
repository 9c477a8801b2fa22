"""The change feed of the Elasticsearch/OpenSearch store, mixed into SearchStore: a sequence
that a second process can follow (`watermark()`, `changes(since)`), as the SQLite store's
never-reused AUTOINCREMENT is.

One document in `{prefix}feed` holds the sequence. A write first *reserves* a block of numbers
(one scripted update: `next += k`, and the block [lo, hi] is listed as pending), writes its
documents carrying those numbers (events: one per event; items: the block's number; an
erasure: none), refreshes them, then *publishes* the block (a second scripted update takes it
off the pending list). The watermark is the **horizon**: every number below the oldest pending
block, or `next` when none is pending. So a reader never moves past a block whose documents are
not all written and visible, however writer processes interleave: a block published early by a
fast writer waits behind a slow writer's older block, and both are delivered once the older one
is published (the "last stable offset" of a transactional log).

A writer that dies leaves its block pending: the block expires after the store's `feed_lease`
(seconds, a URL option), judged by the server's clock at the next reservation by any writer, and
the feed moves on (what the dead writer did write is delivered then). A writer still alive
when its block expired finds it gone when publishing; readers may have moved past the block
meanwhile, so it moves its documents to a fresh block (new numbers) and publishes that: they are
delivered, possibly a second time for a reader that read some of them in between (at least once
in that case, exactly once otherwise).

The documents' scripts, the horizon and the watermark are pure and unit-tested; the mixin makes
the calls."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import polars as pl

from feedrank.exceptions import StoreError
from feedrank.store.base import Changes, Watermark
from feedrank.store.search_connect import SearchConfig, as_json
from feedrank.store.search_frames import EVENT_SOURCE, ITEM_SOURCE, events_frame, items_frame
from feedrank.store.search_layout import Names
from feedrank.store.search_queries import PAGE

FEED_DOC = "seq"
CONFLICT_RETRIES = 50  # writers racing for the feed document: the engine retries the script
MOVE_ATTEMPTS = 3  # a block that keeps expiring while its writer republishes it
_R = TypeVar("_R")

# Painless in the update context: `ctx._now` is the server's clock (epoch milliseconds).
# The horizon is recomputed after every change, and published erasures at or below it are
# folded into `erased`, so the list of erasures stays as short as the pending list.
_FOLD = """
long h = ((Number) s.next).longValue();
for (def p : s.pending) { long l = ((Number) p.lo).longValue() - 1; if (l < h) { h = l; } }
long erased = ((Number) s.erased).longValue();
def above = [];
for (def e : s.erasures) {
  long x = ((Number) e).longValue();
  if (x <= h) { if (x > erased) { erased = x; } } else { above.add(x); }
}
s.erased = erased;
s.erasures = above;
"""

RESERVE_SCRIPT = (
    """
def s = ctx._source;
long now = ctx._now;
long lease = ((Number) params.lease_ms).longValue();
s.pending.removeIf(p -> lease <= 0 || ((Number) p.at).longValue() <= now - lease);
long lo = ((Number) s.next).longValue() + 1;
long hi = lo + ((Number) params.k).longValue() - 1;
s.next = hi;
s.pending.add(['lo': lo, 'hi': hi, 'at': now]);
"""
    + _FOLD
).strip()

PUBLISH_SCRIPT = (
    """
def s = ctx._source;
long lo = ((Number) params.lo).longValue();
if (s.pending.removeIf(p -> ((Number) p.lo).longValue() == lo)) {
  if (params.erasure) { s.erasures.add(((Number) params.hi).longValue()); }
"""
    + _FOLD
    + """
} else {
  ctx.op = 'noop';
}
"""
).strip()


def new_feed_doc(next_seq: int = 0) -> dict[str, Any]:
    return {"next": next_seq, "pending": [], "erasures": [], "erased": 0}


def horizon(doc: dict[str, Any]) -> int:
    """The newest number below every pending block: all of its writes are visible."""
    lows = [int(p["lo"]) - 1 for p in doc.get("pending") or []]
    return min([int(doc.get("next") or 0), *lows])


def watermark_of(doc: dict[str, Any] | None) -> Watermark:
    """The feed document as a Watermark: events and items up to the horizon (one numbering for
    both), erasures as the newest erasure at or below it."""
    if doc is None:
        return Watermark(0, 0, 0)
    h = horizon(doc)
    erased = [int(doc.get("erased") or 0), *(int(e) for e in doc.get("erasures") or [] if e <= h)]
    return Watermark(h, h, max(erased))


def seq_range(after: int, upto: int) -> dict[str, Any]:
    return {"range": {"seq": {"gt": after, "lte": upto}}}


def move_body(lo: int, hi: int, shift: int) -> dict[str, Any]:
    """An update-by-query moving a block's documents to new numbers (seq + shift)."""
    return {
        "query": {"range": {"seq": {"gte": lo, "lte": hi}}},
        "script": {
            "lang": "painless",
            "source": "ctx._source.seq = ((Number) ctx._source.seq).longValue() + params.shift",
            "params": {"shift": shift},
        },
    }


class ChangeFeed:
    """Needs the store's client, names and helpers (declared here for the type checker)."""

    if TYPE_CHECKING:
        client: Any
        config: SearchConfig
        names: Names
        _not_found: type[Exception]
        _transport_errors: tuple[type[Exception], ...]

        def _search(self, index: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]: ...

        def _missing(self, index: str, exc: Exception | None = None) -> StoreError: ...

        def _require(self, index: str) -> None: ...

        def _scan(
            self, index: str, query: dict[str, Any], fields: list[str] | None, **kw: Any
        ) -> Iterator[dict[str, Any]]: ...

        def _attrs(self, index: str) -> dict[str, pl.DataType]: ...

    # -- the sequence ------------------------------------------------------------------------------
    def _feed_update(self, script: str, params: dict[str, Any]) -> dict[str, Any]:
        body = {"script": {"lang": "painless", "source": script, "params": params}, "_source": True}
        try:
            resp = self.client.update(
                index=self.names.feed, id=FEED_DOC, body=body, retry_on_conflict=CONFLICT_RETRIES
            )
        except self._not_found as exc:
            raise self._missing(self.names.feed, exc) from exc
        return dict(as_json(resp))

    def _reserve(self, k: int) -> tuple[int, int]:
        """Reserves k numbers: [lo, hi], pending until published."""
        self._require(self.names.feed)  # an update would create a missing index on the fly
        lease_ms = int(self.config.feed_lease * 1000)
        resp = self._feed_update(RESERVE_SCRIPT, {"k": k, "lease_ms": lease_ms})
        hi = int(resp["get"]["_source"]["next"])
        return hi - k + 1, hi

    def _publish(self, lo: int, hi: int, erasure: bool) -> bool:
        """False when the block had expired (its lease ran out before it was published)."""
        resp = self._feed_update(PUBLISH_SCRIPT, {"lo": lo, "hi": hi, "erasure": erasure})
        return resp.get("result") != "noop"

    def _in_block(
        self,
        k: int,
        write: Callable[[int], _R],
        move: Callable[[int, int, int], None] | None,
        erasure: bool = False,
    ) -> _R:
        """write(lo) under a reserved block of k numbers, then publish it. The block is
        published even when the write fails part-way: what was written is delivered."""
        lo, hi = self._reserve(k)
        try:
            result = write(lo)
        except BaseException:
            with contextlib.suppress(StoreError, *self._transport_errors):
                self._finish(lo, hi, move, erasure)
            raise
        self._finish(lo, hi, move, erasure)
        return result

    def _finish(
        self, lo: int, hi: int, move: Callable[[int, int, int], None] | None, erasure: bool
    ) -> None:
        for _ in range(MOVE_ATTEMPTS):
            if self._publish(lo, hi, erasure):
                return
            # Expired: readers may be past [lo, hi]. Deliver the block again under new numbers.
            new_lo, new_hi = self._reserve(hi - lo + 1)
            if move is not None:
                move(lo, hi, new_lo - lo)
            lo, hi = new_lo, new_hi
        raise StoreError(
            f"a write to {self.names.feed} must be published within the feed lease "
            f"({self.config.feed_lease:g} s); it expired {MOVE_ATTEMPTS} times: raise the store "
            "URL's feed_lease"
        )

    def _move(self, index: str, lo: int, hi: int, shift: int) -> None:
        with contextlib.suppress(self._not_found):
            self.client.update_by_query(
                index=index, body=move_body(lo, hi, shift), refresh=True, conflicts="proceed"
            )

    # -- reading the feed --------------------------------------------------------------------------
    def _feed_doc(self) -> dict[str, Any] | None:
        """The feed document by a realtime GET (no refresh needed); None before any write."""
        try:
            resp = as_json(self.client.get(index=self.names.feed, id=FEED_DOC))
        except self._not_found as exc:
            if "index_not_found" in str(exc) or "no such index" in str(exc):
                raise self._missing(self.names.feed, exc) from exc
            return None
        source: dict[str, Any] = resp["_source"]
        return source

    def watermark(self) -> Watermark:
        return watermark_of(self._feed_doc())

    def changes(self, since: Watermark, max_events: int = 100_000) -> Changes:
        if max_events < 1:
            raise ValueError(f"max_events must be >= 1; got {max_events}")
        now = self.watermark()
        rows: list[dict[str, Any]] = []
        if now.events > since.events:
            body: dict[str, Any] = {
                "query": seq_range(since.events, now.events),
                "sort": [{"seq": "asc"}],  # numbers are unique: a complete search_after key
                "_source": EVENT_SOURCE,
            }
            while len(rows) < max_events:
                body["size"] = min(PAGE, max_events - len(rows))
                hits = self._search(self.names.events_pattern, body)["hits"]["hits"]
                rows.extend(h["_source"] for h in hits)
                if len(hits) < body["size"]:
                    break
                body["search_after"] = hits[-1]["sort"]
        upto = int(rows[-1]["seq"]) if len(rows) == max_events else now.events
        item_rows: list[dict[str, Any]] = []
        if now.items > since.items:
            query = seq_range(since.items, now.items)
            item_rows = list(self._scan(self.names.items, query, ITEM_SOURCE))
        items = items_frame(item_rows, self._attrs(self.names.items) if item_rows else None)
        return Changes(
            events_frame(rows, order="seq"),
            items,
            now.erasures > since.erasures,
            Watermark(upto, now.items, now.erasures),
        )


__all__ = [
    "FEED_DOC",
    "PUBLISH_SCRIPT",
    "RESERVE_SCRIPT",
    "ChangeFeed",
    "horizon",
    "move_body",
    "new_feed_doc",
    "seq_range",
    "watermark_of",
]
