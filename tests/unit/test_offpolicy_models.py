"""Off-policy estimates of feedrank models on a synthetic site whose truth is known: the site logs
uniformly random slates with exact propensities, and the generator's click model gives the CTR
each model's policy would really have had on the same visits."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl
import pytest

from feedrank.datasets.demo import DemoSite, generate_site
from feedrank.evaluation.offpolicy_models import (
    estimate_models,
    expected_ctr,
    logged_impressions,
)
from feedrank.exceptions import FeedrankError
from feedrank.models.base import Recommender
from feedrank.models.glm import GLMRecommender
from feedrank.models.popularity import PopularityRecommender
from feedrank.settings import Settings
from feedrank.views.view import FrameView

N_SIM = 500


@pytest.fixture(scope="module")
def site() -> DemoSite:
    return generate_site(n_users=1000, n_items=100, days=21, logging_policy="uniform", seed=3)


@pytest.mark.parametrize("temperature", [None, 0.5])
def test_estimates_cover_the_true_ctr_of_each_models_policy(
    site: DemoSite, temperature: float | None
) -> None:
    data, settings = site.site_data(), Settings()
    cut = site.end - timedelta(days=5)
    models: dict[str, Recommender] = {"glm": GLMRecommender(), "pop": PopularityRecommender()}
    report = estimate_models(models, data, settings, cut, temperature, n_sim=N_SIM)
    log = report.log
    assert report.impressions == log.height == logged_impressions(data, settings, cut).height
    assert log.height > 10_000
    # the models were fitted on the events before the cut and serve as of the cut
    assert all(datetime.fromisoformat(m.window_[1]) < cut for m in models.values())  # type: ignore[arg-type]
    view = FrameView(data.until(cut), settings, cut)
    truth = {
        name: expected_ctr(m.at(view), log, site.click_probability, temperature, n_sim=N_SIM)
        for name, m in models.items()
    }
    for policy in report.policies:
        assert policy.weights.warnings == ()
        for est in policy.estimates:
            # within about three standard errors (1.5 half-widths of the 95% interval)
            half = (est.ci_high - est.ci_low) / 2
            assert abs(est.value - truth[policy.model]) < 1.5 * half, (policy, truth)
    # the generator's truth orders the policies, and the estimates see it: the GLM (which
    # learns the true click model's terms) earns more than random slates and than popularity
    glm = next(p for p in report.policies if p.model == "glm").estimates[0]
    assert truth["glm"] > truth["pop"] > report.logged.value
    assert glm.ci_low > report.logged.ci_high


def test_a_log_without_propensities_is_refused(site: DemoSite) -> None:
    data = site.site_data()
    bare = data.events.with_columns(context=pl.lit(None, pl.String))
    stripped = type(data)(data.users, data.items, bare)
    with pytest.raises(FeedrankError, match="carries 'propensity'"):
        estimate_models(
            {"pop": PopularityRecommender()}, stripped, Settings(), site.end - timedelta(days=5)
        )
