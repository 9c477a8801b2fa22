"""Every model against the recommender contract (recommender_contract.py)."""

from __future__ import annotations

from typing import ClassVar

from feedrank.models import make
from feedrank.models.base import Recommender

from .recommender_contract import RecommenderContract

SAME_FOR_EVERYONE = "ranks items the same way for every user, by design"


class TestPopularity(RecommenderContract):
    answers_the_unengaged = True
    checkerboard_skip = f"popularity {SAME_FOR_EVERYONE}"

    def make_model(self) -> Recommender:
        return make("popularity", segment_by=["age_band", "gender"], min_segment_weight=5.0)


class TestTrendingPopularity(RecommenderContract):
    answers_the_unengaged = True
    checkerboard_skip = f"popularity {SAME_FOR_EVERYONE}"

    def make_model(self) -> Recommender:
        return make("popularity", half_life_days=2.0)


class TestFreshness(RecommenderContract):
    answers_the_unengaged = True
    checkerboard_skip = f"freshness {SAME_FOR_EVERYONE}"
    dense = True

    def make_model(self) -> Recommender:
        return make("freshness")


class TestGLM(RecommenderContract):
    answers_the_unengaged = True
    dense = True

    def make_model(self) -> Recommender:
        return make("glm")


class TestGLMAffinity(TestGLM):
    """The GLM with the latent user-by-author and user-by-content-type terms."""

    def make_model(self) -> Recommender:
        return make("glm", affinity=["author", "content_type"], affinity_rank=2)

    def checkerboard_model(self) -> Recommender:
        return make("glm", affinity=["content_type"], affinity_rank=1)


class TestItemKNN(RecommenderContract):
    has_similar = True

    def make_model(self) -> Recommender:
        return make("itemknn", k_neighbours=20)


class TestItemKNNBM25(RecommenderContract):
    has_similar = True

    def make_model(self) -> Recommender:
        return make("itemknn", k_neighbours=10, weighting="bm25")


class TestItemKNNTFIDF(RecommenderContract):
    has_similar = True

    def make_model(self) -> Recommender:
        return make("itemknn", k_neighbours=10, weighting="tfidf")


class TestUserKNN(RecommenderContract):
    def make_model(self) -> Recommender:
        return make("userknn", k_neighbours=10)


class TestUserKNNBM25(RecommenderContract):
    def make_model(self) -> Recommender:
        return make("userknn", k_neighbours=10, weighting="bm25")


class TestALS(RecommenderContract):
    has_similar = True

    def make_model(self) -> Recommender:
        return make("als", factors=8, regularization=0.05, iterations=10, random_state=1)


class TestBPR(RecommenderContract):
    has_similar = True

    def make_model(self) -> Recommender:
        # one thread: implicit's multi-threaded SGD is not reproducible bit for bit
        return make(
            "bpr", factors=8, learning_rate=0.05, iterations=200, random_state=1, num_threads=1
        )


class TestEASE(RecommenderContract):
    has_similar = True

    def make_model(self) -> Recommender:
        return make("ease", l2=10.0)


class TestTransition(RecommenderContract):
    has_similar = True

    def make_model(self) -> Recommender:
        return make("transition", session_gap_hours=24.0)


class TestSASRec(RecommenderContract):
    checkerboard_skip = (
        "a next-item model: every checkerboard user's last item is the last of its block, "
        "which nothing ever follows (its known answer is tests/unit/test_sasrec.py's chain)"
    )

    def make_model(self) -> Recommender:
        return make("sasrec", max_len=10, dim=16, n_blocks=1, epochs=4, batch_size=64)


class TestContent(RecommenderContract):
    has_similar = True

    def make_model(self) -> Recommender:
        return make("content")


class TestHybrid(RecommenderContract):
    dense = True
    generators: ClassVar[list[str]] = ["ease", "itemknn", "popularity", "freshness"]

    def make_model(self) -> Recommender:
        return make("hybrid", generators=self.generators, n_candidates=10)

    def checkerboard_model(self) -> Recommender:
        # The checkerboard's timestamps follow item order, so every user's latest item is the
        # same one: a "latest" inner hold-out would hide it from everybody and leave the GLM
        # nothing to learn from. A random inner hold-out is the right choice for such data.
        return make("hybrid", generators=self.generators, n_candidates=10, holdout="random")


class TestLTR(RecommenderContract):
    generators: ClassVar[list[str]] = ["transition", "ease", "popularity"]

    def make_model(self) -> Recommender:
        return make("ltr", generators=self.generators, n_candidates=10, n_estimators=30)

    def checkerboard_model(self) -> Recommender:
        return make(
            "ltr",
            generators=self.generators,
            n_candidates=10,
            n_estimators=30,
            min_child_samples=2,
            holdout="random",
        )


class TestBlend(RecommenderContract):
    dense = True

    def make_model(self) -> Recommender:
        return make("blend", generators=["ease", "content"], weights=[0.7, 0.3])


class TestBilinear(RecommenderContract):
    dense = True
    checkerboard_skip = (
        "a click model over item metadata: both blocks' items look alike within a block"
    )

    def make_model(self) -> Recommender:
        return make("bilinear", dim=8, max_iter=100)


class TestTwoTower(RecommenderContract):
    dense = True
    checkerboard_skip = (
        "a click model over item metadata: both blocks' items look alike within a block"
    )

    def make_model(self) -> Recommender:
        return make("twotower", dim=8, max_iter=60)


class TestBilinearCF(RecommenderContract):
    """Collaborative item vectors: what a catalogue without attributes falls back to."""

    dense = True

    def make_model(self) -> Recommender:
        return make("bilinear", vectors="cf", dim=8, max_iter=100)


class TestTwoTowerCF(RecommenderContract):
    dense = True

    def make_model(self) -> Recommender:
        return make("twotower", vectors="cf", dim=8, max_iter=60)


class TestHybridAllMembers(TestHybrid):
    """Every generator kept (no selection): the GLM alone weighs them."""

    def make_model(self) -> Recommender:
        return make("hybrid", generators=self.generators, n_candidates=10, select="none")

    def checkerboard_model(self) -> Recommender:
        return make(
            "hybrid", generators=self.generators, n_candidates=10, holdout="random", select="none"
        )
