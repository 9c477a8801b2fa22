"""The live path's cache (api.state.LiveCache): what it serves again and what it re-scores.
A fake clock, never the wall clock."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import polars as pl

from feedrank.api.state import LiveCache

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def catalogue(version: int, as_of: datetime) -> Any:
    return SimpleNamespace(version=version, as_of=as_of)


class Scorer:
    def __init__(self, rows: int = 10) -> None:
        self.calls = 0
        self.rows = rows

    def __call__(self) -> pl.DataFrame:
        self.calls += 1
        return pl.DataFrame({"item_id": [f"i{self.calls}-{j}" for j in range(self.rows)]})


KEY = ("glm", "u1", True)


def test_an_unchanged_user_is_served_from_the_cache_across_other_users_events() -> None:
    clock, score = Clock(), Scorer()
    cache = LiveCache(max_age=5.0, clock=clock)
    sig = (T0, 3)  # the user's newest event, counted by both catalogues below
    first = cache.get_or_score(KEY, sig, catalogue(1, T0 + timedelta(seconds=1)), 10, score)
    clock.now = 4.9  # a newer catalogue (someone else's event), the entry still young
    again = cache.get_or_score(KEY, sig, catalogue(2, T0 + timedelta(seconds=2)), 10, score)
    assert score.calls == 1 and again is first
    clock.now = 5.1  # too old for a catalogue it was not scored over
    cache.get_or_score(KEY, sig, catalogue(2, T0 + timedelta(seconds=2)), 10, score)
    assert score.calls == 2
    clock.now = 1000.0  # but as old as it likes over the catalogue it was scored over
    cache.get_or_score(KEY, sig, catalogue(2, T0 + timedelta(seconds=2)), 10, score)
    assert score.calls == 2


def test_the_users_own_event_rescoring_at_once_and_again_once_the_catalogue_counts_it() -> None:
    clock, score = Clock(), Scorer()
    cache = LiveCache(max_age=5.0, clock=clock)
    cache.get_or_score(KEY, (T0, 3), catalogue(1, T0 + timedelta(seconds=1)), 10, score)
    newer = (T0 + timedelta(seconds=10), 4)  # the user acted: their events changed
    cache.get_or_score(KEY, newer, catalogue(1, T0 + timedelta(seconds=1)), 10, score)
    assert score.calls == 2
    # Scored before the catalogue counted the new event: the next catalogue re-scores, young
    # or not (its counters now include what the user just did).
    cache.get_or_score(KEY, newer, catalogue(2, T0 + timedelta(seconds=11)), 10, score)
    assert score.calls == 3


def test_a_longer_list_is_scored_only_when_there_was_more_to_give() -> None:
    clock = Clock()
    cache = LiveCache(clock=clock)
    few = Scorer(rows=4)  # the user had only 4 candidates left
    cat = catalogue(1, T0 + timedelta(seconds=1))
    cache.get_or_score(KEY, (T0, 1), cat, 10, few)
    cache.get_or_score(KEY, (T0, 1), cat, 50, few)
    assert few.calls == 1
    full = Scorer(rows=10)
    other = ("glm", "u2", True)
    cache.get_or_score(other, (T0, 1), cat, 10, full)
    assert cache.get_or_score(other, (T0, 1), cat, 50, full).height == 10 and full.calls == 2


def test_concurrent_misses_score_once() -> None:
    cache, started, release = LiveCache(clock=Clock()), threading.Event(), threading.Event()
    calls = 0

    def slow() -> pl.DataFrame:
        nonlocal calls
        calls += 1
        started.set()
        release.wait(timeout=30)
        return pl.DataFrame({"item_id": ["a"]})

    cat = catalogue(1, T0 + timedelta(seconds=1))
    got: list[pl.DataFrame] = []
    threads = [
        threading.Thread(target=lambda: got.append(cache.get_or_score(KEY, (T0, 1), cat, 1, slow)))
        for _ in range(4)
    ]
    threads[0].start()
    assert started.wait(timeout=30)  # the first is scoring; the others arrive meanwhile
    for t in threads[1:]:
        t.start()
    release.set()
    for t in threads:
        t.join(timeout=30)
    assert calls == 1 and len(got) == 4 and all(g is got[0] for g in got)


def test_the_least_recently_used_user_goes_first() -> None:
    cache, score = LiveCache(capacity=2, clock=Clock()), Scorer()
    cat = catalogue(1, T0 + timedelta(seconds=1))
    for u in ("a", "b", "a", "c"):  # b is the least recently used when c arrives
        cache.get_or_score(("m", u, True), (T0, 1), cat, 10, score)
    assert score.calls == 3
    cache.get_or_score(("m", "a", True), (T0, 1), cat, 10, score)
    assert score.calls == 3
    cache.get_or_score(("m", "b", True), (T0, 1), cat, 10, score)
    assert score.calls == 4
