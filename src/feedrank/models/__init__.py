"""Models behind one small contract (base.py); `MODELS` names them for the CLI and registry."""

from __future__ import annotations

from feedrank.models.base import Recommender
from feedrank.models.bilinear import BilinearRecommender
from feedrank.models.content import ContentRecommender
from feedrank.models.ease import EASERecommender
from feedrank.models.factorization import ALSRecommender, BPRRecommender
from feedrank.models.glm import GLMRecommender
from feedrank.models.hybrid import BlendRecommender, HybridRecommender
from feedrank.models.knn import ItemKNNRecommender, UserKNNRecommender
from feedrank.models.popularity import PopularityRecommender
from feedrank.models.twotower import TwoTowerRecommender  # torch is imported only by fit

MODELS: dict[str, type[Recommender]] = {
    GLMRecommender.kind: GLMRecommender,
    PopularityRecommender.kind: PopularityRecommender,
    ItemKNNRecommender.kind: ItemKNNRecommender,
    UserKNNRecommender.kind: UserKNNRecommender,
    ALSRecommender.kind: ALSRecommender,
    BPRRecommender.kind: BPRRecommender,
    EASERecommender.kind: EASERecommender,
    ContentRecommender.kind: ContentRecommender,
    HybridRecommender.kind: HybridRecommender,
    BlendRecommender.kind: BlendRecommender,
    BilinearRecommender.kind: BilinearRecommender,
    TwoTowerRecommender.kind: TwoTowerRecommender,
}

__all__ = [
    "MODELS",
    "ALSRecommender",
    "BPRRecommender",
    "BlendRecommender",
    "ContentRecommender",
    "EASERecommender",
    "GLMRecommender",
    "HybridRecommender",
    "ItemKNNRecommender",
    "PopularityRecommender",
    "Recommender",
    "UserKNNRecommender",
]
