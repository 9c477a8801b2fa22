"""Every model against the recommender contract (recommender_contract.py)."""

from __future__ import annotations

from feedrank.models.base import Recommender
from feedrank.models.content import ContentRecommender
from feedrank.models.ease import EASERecommender
from feedrank.models.factorization import ALSRecommender, BPRRecommender
from feedrank.models.glm import GLMRecommender
from feedrank.models.knn import ItemKNNRecommender, UserKNNRecommender
from feedrank.models.popularity import PopularityRecommender

from .recommender_contract import RecommenderContract


class TestPopularity(RecommenderContract):
    checkerboard_skip = "popularity ranks items the same way for every user, by design"

    def make_model(self) -> Recommender:
        return PopularityRecommender(segment_by=("age_band", "gender"), min_segment_weight=5.0)


class TestTrendingPopularity(RecommenderContract):
    checkerboard_skip = "popularity ranks items the same way for every user, by design"

    def make_model(self) -> Recommender:
        return PopularityRecommender(half_life_days=2.0)


class TestGLM(RecommenderContract):
    def make_model(self) -> Recommender:
        return GLMRecommender()


class TestItemKNN(RecommenderContract):
    has_similar = True

    def make_model(self) -> Recommender:
        return ItemKNNRecommender(k_neighbours=20)


class TestItemKNNBM25(RecommenderContract):
    has_similar = True

    def make_model(self) -> Recommender:
        return ItemKNNRecommender(k_neighbours=10, weighting="bm25")


class TestItemKNNTFIDF(RecommenderContract):
    has_similar = True

    def make_model(self) -> Recommender:
        return ItemKNNRecommender(k_neighbours=10, weighting="tfidf")


class TestUserKNN(RecommenderContract):
    def make_model(self) -> Recommender:
        return UserKNNRecommender(k_neighbours=10)


class TestUserKNNBM25(RecommenderContract):
    def make_model(self) -> Recommender:
        return UserKNNRecommender(k_neighbours=10, weighting="bm25")


class TestALS(RecommenderContract):
    has_similar = True

    def make_model(self) -> Recommender:
        return ALSRecommender(factors=8, regularization=0.05, iterations=10, random_state=1)


class TestBPR(RecommenderContract):
    has_similar = True

    def make_model(self) -> Recommender:
        return BPRRecommender(factors=8, learning_rate=0.05, iterations=200, random_state=1)


class TestEASE(RecommenderContract):
    has_similar = True

    def make_model(self) -> Recommender:
        return EASERecommender(l2=10.0)


class TestContent(RecommenderContract):
    has_similar = True

    def make_model(self) -> Recommender:
        return ContentRecommender()
