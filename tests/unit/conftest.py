"""A small synthetic site with a known truth, shared by the feature and model tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from feedrank.datasets.demo import DemoSite, generate_site
from feedrank.schema import validate_events, validate_items, validate_users
from feedrank.settings import Settings
from feedrank.views.site import SiteData

if TYPE_CHECKING:
    from feedrank.models.glm import GLMRecommender


def site_data(site: DemoSite, settings: Settings) -> SiteData:
    return SiteData(
        validate_users(site.users).good,
        validate_items(site.items).good,
        validate_events(site.events, settings).good.sort("timestamp"),
    )


@pytest.fixture(scope="session")
def small_site() -> DemoSite:
    return generate_site(n_users=300, n_items=120, days=12, seed=7)


@pytest.fixture(scope="session")
def small_data(small_site: DemoSite) -> SiteData:
    return site_data(small_site, Settings())


@pytest.fixture(scope="session")
def fitted_glm(small_data: SiteData) -> GLMRecommender:
    """Fitted once per session: fitted models never change, so tests may share it."""
    from feedrank.models.glm import GLMRecommender

    return GLMRecommender().fit(small_data, Settings())
