"""The clickstream report renders every plot, the comparison table, the split and its seed."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest
from test_loo import unit_site

from feedrank.datasets.clickstream import clickstream_settings
from feedrank.evaluation.clickstream_eval import ModelSpec, compare, parse_models
from feedrank.evaluation.clickstream_report import item_similarity, render_report
from feedrank.exceptions import ConfigError


@pytest.fixture(scope="module")
def comparison():  # type: ignore[no-untyped-def]
    specs = [
        ModelSpec("ease", "ease"),
        ModelSpec("hybrid", "hybrid", {"generators": ["ease", "popularity"], "n_candidates": 10}),
        ModelSpec("ease (tuned)", "ease", grid=[{"l2": 10.0}, {"l2": 100.0}]),
    ]
    return compare(unit_site(), clickstream_settings(), seed=5, specs=specs)


def test_popularity_is_always_beside(comparison) -> None:  # type: ignore[no-untyped-def]
    names = comparison.table()["model"].to_list()
    assert names[0] == "popularity" and {"ease", "hybrid", "ease (tuned)"} <= set(names)
    assert "ease (tuned)" in comparison.validation


def test_report_renders_plots_table_and_seed(comparison) -> None:  # type: ignore[no-untyped-def]
    page = render_report(comparison, clickstream_settings(), {"rows": 1})
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 4  # distribution, similarity per unit and per type, 3D
    for b in images:
        assert base64.b64decode(b).startswith(b"\x89PNG")
    assert "Split seed: <b>5</b>" in page and "seeded leave-one-out (seed 5)" in page
    assert "<td>popularity</td>" in page and "<td>hybrid</td>" in page
    assert "How much each source counts" in page and "ease_score" in page


def test_item_similarity_by_hand() -> None:
    site = unit_site(n_users=30, n_items=12, seed=2)
    sim = item_similarity(site, clickstream_settings(), neighbours=1)
    assert sim.height == 12
    v = sim["avg_similarity"].to_numpy()
    assert ((v >= 0) & (v <= 1 + 1e-9)).all() and np.isfinite(v).all()


def test_parse_models() -> None:
    assert {s.kind for s in parse_models("popularity,ease")} == {"popularity", "ease"}
    with pytest.raises(ConfigError, match="--models must be among"):
        parse_models("ease,nope")
