"""`feedrank demo clickstream` end to end on the real seed-004 data and a real SQLite file; and
`feedrank demo` is still the synthetic demo."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import cli_run
import pytest

from feedrank.datasets.clickstream import default_clickstream_dir

REAL = default_clickstream_dir()
run = partial(cli_run.run, columns=220)  # the comparison table is wide


@pytest.mark.skipif(REAL is None, reason="../shared/data/clickstream not present")
def test_demo_clickstream_end_to_end(tmp_path: Path) -> None:
    db, report = tmp_path / "cs.db", tmp_path / "out" / "report.html"
    out = run(
        db,
        "demo",
        "clickstream",
        "--models",
        "popularity,content",
        "--out",
        str(report),
        "--seed",
        "3",
    )
    assert "rows: 3888, cookies: 999, forms: 469" in out
    assert "interactions 3884" in out
    assert "split seed 3" in out and "seeded leave-one-out (seed 3)" in out
    assert "popularity" in out and "content" in out and "HR@10" in out, out
    page = report.read_text()
    assert page.count('<img src="data:image/png;base64,') == 4
    assert "Split seed: <b>3</b>" in page
    again = run(db, "demo", "clickstream", "--models", "popularity", "--out", str(report))
    assert "interactions 0" in again  # the import is idempotent


def test_demo_clickstream_bad_data_dir(tmp_path: Path) -> None:
    out = run(tmp_path / "x.db", "demo", "clickstream", "--data", str(tmp_path), code=2)
    assert "--data must be a directory holding submissions.csv" in out


def test_demo_group_keeps_the_synthetic_demo(tmp_path: Path) -> None:
    out = run(
        tmp_path / "d.db",
        "demo",
        "--users",
        "60",
        "--items",
        "30",
        "--days",
        "7",
        "--test-days",
        "2",
    )
    assert "generated" in out and "held-out" in out
    assert "clickstream" in run(tmp_path / "d.db", "demo", "--help")
