"""The dashboard's parts without a server: the SVG charts, the daily counts that follow a real
store's change feed, the background jobs."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from feedrank.api.dashboard import svg
from feedrank.api.dashboard.data import DailyCounts, Jobs
from feedrank.io import import_frame
from feedrank.store import open_store

T0 = datetime(2026, 3, 1, 10, tzinfo=UTC)


@pytest.mark.parametrize(("lo", "hi"), [(0, 1), (0, 0.037), (0, 13_512), (-0.8, 0.6), (5, 5)])
def test_ticks_are_round_and_cover_the_range(lo: float, hi: float) -> None:
    ticks = svg.nice_ticks(lo, hi)
    assert ticks[0] <= lo and ticks[-1] >= hi
    assert 2 <= len(ticks) <= 12
    steps = {round(b - a, 9) for a, b in itertools.pairwise(ticks)}
    assert len(steps) == 1


def test_charts_escape_labels_and_mark_every_datum() -> None:
    evil = "<script>alert(1)</script>"
    out = svg.stacked_bars("s", evil, ["d1", "d2"], {evil: [1, 2], "b": [0, 3]}, "n")
    assert "<script>" not in out and "&lt;script&gt;" in out
    assert out.count('class="mark"') == 3  # the zero is not drawn
    lines = svg.lines(
        "l", "t", ["a", "b", "c"], {"x": [0.1, None, 0.3]}, {"x": ([0, 0, 0], [1, 1, 1])}
    )
    assert lines.count('class="mark"') == 1 and "<polygon" in lines
    cal = svg.calibration("c", "t", {"m": [{"predicted": 0.1, "observed": 0.12, "count": 5}]})
    assert 'class="mark"' in cal
    iv = svg.intervals("i", "t", ["f"], [0.5], [0.1], [0.9])
    assert iv.count('class="mark"') == 1
    bars = svg.grouped_bars("g", "t", ["x"], {"a": [float("nan")], "b": [0.2]}, width=400)
    assert bars.count('class="mark"') == 1 and 'viewBox="0 0 400' in bars


def _events(users: list[str], day: int, n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": [u for u in users for _ in range(n)],
            "item_id": [f"i{k}" for _ in users for k in range(n)],
            "type": ["click" if k % 2 else "impression" for _ in users for k in range(n)],
            "timestamp": [T0 + timedelta(days=day, minutes=k) for _ in users for k in range(n)],
        }
    )


def _recount(store_url: str) -> pl.DataFrame:
    with open_store(store_url) as s:
        ev = s.events()
    return (
        ev.group_by(pl.col("timestamp").dt.date().alias("day"), "type")
        .agg(n=pl.len().cast(pl.Int64))
        .sort("day", "type")
    )


def test_daily_counts_follow_the_store_and_start_over_after_an_erasure(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    daily = DailyCounts()
    with open_store(url) as store:
        import_frame(store, "interactions", _events(["u1", "u2"], 0, 4))
        daily.update(store)
        assert daily.counts.sort("day", "type").equals(_recount(url))
        import_frame(store, "interactions", _events(["u2", "u3"], 1, 3))
        import_frame(store, "interactions", _events(["u1"], 0, 4))  # duplicates: not new
        daily.update(store)
        assert daily.counts.sort("day", "type").equals(_recount(url))
        assert daily.users.filter(pl.col("day") == T0.date())["user_id"].sort().to_list() == [
            "u1",
            "u2",
        ]
        store.delete_user("u2")
        daily.update(store)
        assert daily.counts.sort("day", "type").equals(_recount(url))
        assert "u2" not in daily.users["user_id"].to_list()


def test_jobs_show_the_newest_finished_result_while_the_next_is_computed() -> None:
    jobs = Jobs()
    try:
        assert jobs.latest("k", 1, lambda: "one") == (False, None)
        jobs.wait()
        assert jobs.latest("k", 1, lambda: "unused") == (True, "one")
        assert jobs.latest("k", 2, lambda: "two") == (False, "one")  # stale while computing
        jobs.wait()
        assert jobs.latest("k", 2, lambda: "unused") == (True, "two")
        jobs.latest("bad", 1, lambda: 1 / 0)
        jobs.wait()
        fresh, got = jobs.latest("bad", 1, lambda: None)
        assert fresh and isinstance(got, ZeroDivisionError)
    finally:
        jobs.shutdown()


def test_no_absolute_url_in_a_chart_but_the_svg_namespace() -> None:
    out = svg.lines("l", "t", ["a"], {"x": [1.0]})
    assert set(re.findall(r"https?://[^\s\"']+", out)) == {"http://www.w3.org/2000/svg"}
