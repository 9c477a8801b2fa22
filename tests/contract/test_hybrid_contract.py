"""The hybrid and blend recommenders through the recommender conformance suite."""

from __future__ import annotations

from feedrank.models.base import Recommender
from feedrank.models.hybrid import HybridRecommender

from .recommender_contract import RecommenderContract


class TestHybrid(RecommenderContract):
    def make_model(self) -> Recommender:
        return HybridRecommender(["ease", "itemknn", "popularity", "freshness"], n_candidates=10)

    def checkerboard_model(self) -> Recommender:
        # The checkerboard's timestamps follow item order, so every user's latest item is the
        # same one: a "latest" inner hold-out would hide it from everybody and leave the GLM
        # nothing to learn from. A random inner hold-out is the right choice for such data.
        return HybridRecommender(
            ["ease", "itemknn", "popularity", "freshness"], n_candidates=10, holdout="random"
        )
