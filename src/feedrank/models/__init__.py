"""Models behind one small contract (base.py); `MODELS` names them for the CLI and registry."""

from __future__ import annotations

from feedrank.models.base import Recommender
from feedrank.models.glm import GLMRecommender
from feedrank.models.popularity import PopularityRecommender

MODELS: dict[str, type[Recommender]] = {
    GLMRecommender.kind: GLMRecommender,
    PopularityRecommender.kind: PopularityRecommender,
}

__all__ = ["MODELS", "GLMRecommender", "PopularityRecommender", "Recommender"]
