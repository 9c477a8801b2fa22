"""`feedrank offpolicy` end to end on a real SQLite file: a demo site that logged random slates
with their propensities, each model's CTR estimated from it; and the Open Bandit check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_run import run
from typer.testing import CliRunner

from feedrank.cli.main import app
from feedrank.datasets.open_bandit import default_root

runner = CliRunner()


def test_demo_with_random_slates_then_offpolicy_estimate(tmp_path: Path) -> None:
    db = tmp_path / "site.db"
    demo = ["demo", "--users", "400", "--items", "60", "--days", "14", "--show-users", "0"]
    out = run(db, *demo, "--logging-policy", "uniform", "--test-days", "4")
    assert "5. off-policy" in out and "true_ctr" in out
    got = json.loads(
        run(db, "offpolicy", "estimate", "--model", "glm", "--test-days", "4", "--json")
    )
    assert "frozen" in got["split"] and got["logged_policy"]["method"] == "observed"
    rows = {(r["model"], r["method"]): r for r in got["estimates"]}
    assert set(rows) == {(m, e) for m in ("glm", "popularity") for e in ("ips", "snips", "dr")}
    for r in rows.values():
        assert r["ci_low"] <= r["ctr"] <= r["ci_high"] and r["policy"] == "greedy"
        assert r["support"] > 0 and r["effective_n"] > 10
    soft = json.loads(
        run(db, "offpolicy", "estimate", "--temperature", "0.5", "--n-sim", "200", "--json")
    )
    assert {r["policy"] for r in soft["estimates"]} == {"softmax(0.5)"}
    # exploration spreads the weight over more of the log than the greedy top-k does
    soft_glm = next(r for r in soft["estimates"] if r["model"] == "glm")
    assert soft_glm["effective_n"] > rows[("glm", "ips")]["effective_n"]
    page = tmp_path / "report.html"
    run(db, "report", "--out", str(page), "--test-days", "4")
    html = page.read_text()
    assert "Off-policy: each model" in html and 'alt="off-policy estimates"' in html


def test_a_store_without_propensities_gets_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "plain.db"
    run(
        db,
        "demo",
        "--users",
        "100",
        "--items",
        "30",
        "--days",
        "7",
        "--test-days",
        "2",
        "--show-users",
        "0",
    )
    result = runner.invoke(app, ["--store", f"sqlite:///{db}", "offpolicy", "estimate"])
    assert result.exit_code == 2 and "carries 'propensity'" in result.output


@pytest.mark.skipif(
    not default_root().exists(), reason="../shared/data/open-bandit is not beside the repo"
)
def test_open_bandit_check_prints_every_campaign_and_estimator(tmp_path: Path) -> None:
    out = run(tmp_path / "unused.db", "offpolicy", "open-bandit")
    assert "random log, men" in out and "random log, women" in out
    for method in ("ips", "snips", "dr"):
        assert method in out
    assert "effective sample size" in out  # the women log's weights are flagged
