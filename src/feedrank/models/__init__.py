"""Models behind one small contract (base.py), named for the CLI, the registry and the hybrids.

The registry is lazy: a model's module (and the libraries it needs: glum, implicit,
scikit-learn, torch) is imported only when that model is asked for, so `feedrank --help` and
serving one model do not pay for the others."""

from __future__ import annotations

import importlib
from typing import Any

from feedrank.exceptions import ConfigError
from feedrank.models.base import Recommender, Scorer

_CLASSES = {
    "glm": "feedrank.models.glm:GLMRecommender",
    "popularity": "feedrank.models.popularity:PopularityRecommender",
    "freshness": "feedrank.models.freshness:FreshnessRecommender",
    "itemknn": "feedrank.models.knn:ItemKNNRecommender",
    "userknn": "feedrank.models.knn:UserKNNRecommender",
    "als": "feedrank.models.factorization:ALSRecommender",
    "bpr": "feedrank.models.factorization:BPRRecommender",
    "ease": "feedrank.models.ease:EASERecommender",
    "transition": "feedrank.models.transition:TransitionRecommender",
    "content": "feedrank.models.content:ContentRecommender",
    "hybrid": "feedrank.models.hybrid:HybridRecommender",
    "blend": "feedrank.models.hybrid:BlendRecommender",
    "ltr": "feedrank.models.ltr:LTRRecommender",
    "sasrec": "feedrank.models.sasrec:SASRecRecommender",
    "bilinear": "feedrank.models.bilinear:BilinearRecommender",
    "twotower": "feedrank.models.twotower:TwoTowerRecommender",
}
MODELS: tuple[str, ...] = tuple(_CLASSES)


def model_class(kind: str) -> type[Recommender]:
    if kind not in _CLASSES:
        raise ConfigError(f"model must be one of {sorted(_CLASSES)}; got '{kind}'")
    module, name = _CLASSES[kind].split(":")
    cls: type[Recommender] = getattr(importlib.import_module(module), name)
    return cls


def make(kind: str, **params: Any) -> Recommender:
    """An unfitted model of this kind with these parameters (unknown names are an error that
    lists the allowed ones)."""
    cls = model_class(kind)
    allowed = sorted(cls().get_params())
    bad = sorted(set(params) - set(allowed))
    if bad:
        raise ConfigError(f"parameters of '{kind}' must be among {allowed}; got {bad}")
    return cls(**params)


__all__ = ["MODELS", "Recommender", "Scorer", "make", "model_class"]
