"""Seed 004's evaluation on its clickstream: every model on one seeded leave-one-out hold-out
(feedrank.evaluation.loo), side by side with popularity.

The models: popularity; the seed's own ALS set-up (20 factors, regularization 0.1, alpha 15,
50 iterations); BPR; item-kNN, user-kNN and EASE with their parameters tuned on validation
splits carved from the training data (never on the test hold-out); EASE on the seed's
confidence (asset-type weight x submissions) instead of binary; content (all item metadata)
and content on the business unit alone; transition (tuned; with no timestamps every form is
one step, so it is smoothed co-occurrence); the learned hybrid and the learned ranker (their
inner hold-out at random, as time carries no signal); and two blends with the
business-unit content model whose weight is tuned on validation for HR@10 + business-unit hit
rate (the seed's two goals, equally weighted): EASE's min-max scores + unit content, and the
hybrid's rank discount + unit content. Last, the hybrid over the seed's own signals
(`attribute_pool`: EASE, popularity, the user's asset-type and business-unit profiles as
content models, transition), which chooses its members on its inner hold-out and whose EASE
l2 and GLM alpha are tuned on validation."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import polars as pl

from feedrank.evaluation.loo import ModelResult, comparison_table, fit_and_evaluate, tune
from feedrank.evaluation.splits import Split, loo_split
from feedrank.exceptions import ConfigError
from feedrank.models import MODELS, model_class
from feedrank.models.base import Recommender
from feedrank.settings import Settings
from feedrank.views.site import SiteData

UNIT_CONTENT = {
    "kind": "content",
    "name": "unit_content",
    "params": {"metadata_columns": ["business_unit"]},
}


def hr(m: dict[str, float]) -> float:
    return m["HR@10"]


def hr_plus_bu(m: dict[str, float]) -> float:
    return m["HR@10"] + m["BU hit rate"]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    grid: Sequence[dict[str, Any]] = ()  # tuned on validation, merged over params
    objective: Callable[[dict[str, float]], float] = hr
    objective_name: str = "HR@10"
    weighted: bool = True  # the seed's asset-type weights in the confidence

    def factory(self, extra: dict[str, Any] | None = None) -> Callable[..., Recommender]:
        cls = model_class(self.kind)
        base = {**self.params, **(extra or {})}
        return lambda **p: cls(**{**base, **p})


def attribute_pool(l2: float = 200.0) -> list[Any]:
    """Generators for the seed's "next best asset": EASE (co-consumption), popularity, the
    user's profile over asset types and over business units (content models on one column
    each), and transition."""
    return [
        {"kind": "ease", "params": {"l2": l2}},
        "popularity",
        {
            "kind": "content",
            "name": "asset_type",
            "params": {"metadata_columns": ["gated_asset_type"], "metadata_weight": 1.0},
        },
        {
            "kind": "content",
            "name": "unit",
            "params": {"metadata_columns": ["business_unit"], "metadata_weight": 1.0},
        },
        "transition",
    ]


def _blend(
    w: float, base: str = "ease", normalise: Sequence[str] = ("minmax", "minmax")
) -> dict[str, Any]:
    return {
        "generators": [base, UNIT_CONTENT],
        "weights": [round(1 - w, 2), w],
        "normalise": list(normalise),
    }


def default_specs() -> list[ModelSpec]:
    return [
        ModelSpec("popularity", "popularity"),
        ModelSpec(
            "als (seed's set-up)",
            "als",
            {"factors": 20, "regularization": 0.1, "alpha": 15.0, "iterations": 50},
        ),
        ModelSpec("bpr", "bpr", {"num_threads": 1}),  # one thread: reproducible
        ModelSpec(
            "itemknn (tuned)",
            "itemknn",
            grid=[
                {"k_neighbours": k, "weighting": w} for k in (20, 50, 200) for w in ("none", "bm25")
            ],
        ),
        ModelSpec("userknn (tuned)", "userknn", grid=[{"k_neighbours": k} for k in (20, 50, 200)]),
        ModelSpec("ease", "ease"),
        ModelSpec("ease (asset weight x count)", "ease", {"binary": False}),
        ModelSpec(
            "ease (tuned)",
            "ease",
            grid=[
                {"l2": l2, "binary": b} for l2 in (10.0, 50.0, 200.0, 500.0) for b in (True, False)
            ],
        ),
        ModelSpec(
            "transition (tuned)",
            "transition",
            grid=[{"smoothing": a, "k_similar": k} for a in (0.5, 2.0, 8.0) for k in (20, 50, 200)],
        ),
        ModelSpec("ltr", "ltr", {"holdout": "random"}),
        ModelSpec("content", "content"),
        ModelSpec("content (business unit)", "content", {"metadata_columns": ["business_unit"]}),
        ModelSpec("hybrid", "hybrid"),
        ModelSpec(
            "blend ease + unit content (tuned)",
            "blend",
            grid=[_blend(w) for w in (0.1, 0.2, 0.3, 0.4)],
            objective=hr_plus_bu,
            objective_name="HR@10 + BU hit rate",
        ),
        ModelSpec(
            "blend hybrid ranks + unit content (tuned)",
            "blend",
            grid=[_blend(w, "hybrid", ("rank", "minmax")) for w in (0.1, 0.2, 0.3)],
            objective=hr_plus_bu,
            objective_name="HR@10 + BU hit rate",
        ),
        ModelSpec(
            "hybrid over asset type, unit, ease, popularity, transition (tuned)",
            "hybrid",
            {"holdout": "random"},
            grid=[
                {"generators": attribute_pool(l2), "alpha": a}
                for l2 in (50.0, 200.0)
                for a in (1e-3, 1e-2, 1e-1)
            ],
        ),
    ]


@dataclass
class Comparison:
    split: Split
    results: list[ModelResult]
    validation: dict[str, pl.DataFrame]  # model name -> its validation table
    skipped: dict[str, str]  # model name -> why

    def table(self) -> pl.DataFrame:
        return comparison_table(self.results)

    def best(self, objective: str | Callable[[dict[str, float]], float] = "HR@10") -> ModelResult:
        """The best model other than popularity by a metric name or an objective."""
        key = objective if callable(objective) else (lambda m: m[objective])
        ranked = [r for r in self.results if r.kind != "popularity"] or self.results
        return max(ranked, key=lambda r: key(r.metrics()))

    def result(self, name: str) -> ModelResult:
        return next(r for r in self.results if r.name == name)


def unweighted(settings: Settings) -> Settings:
    return dataclasses.replace(settings, attribute_weights=None)


def compare(
    data: SiteData,
    settings: Settings,
    seed: int = 0,
    specs: Sequence[ModelSpec] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Comparison:
    """Hold out, tune (on training data only), fit and evaluate every spec; popularity is
    always included."""
    specs = list(specs if specs is not None else default_specs())
    if not any(s.kind == "popularity" for s in specs):
        specs.insert(0, ModelSpec("popularity", "popularity"))
    split = loo_split(data, settings, seed)
    results, validation, skipped = [], {}, {}
    for spec in specs:
        if spec.kind not in MODELS:
            skipped[spec.name] = f"model kind '{spec.kind}' is not available"
            continue
        if progress:
            progress(spec.name)
        st = settings if spec.weighted else unweighted(settings)
        factory = spec.factory()
        chosen: dict[str, Any] = {}
        if spec.grid:
            chosen, table = tune(factory, spec.grid, split.train, st, seed, spec.objective)
            validation[spec.name] = table
        note = _describe({**spec.params, **chosen})
        if spec.grid:
            note = f"{note} (validation {spec.objective_name})".strip()
        results.append(
            fit_and_evaluate(spec.name, partial(factory, **chosen), split, st, note=note)
        )
    return Comparison(split, results, validation, skipped)


def _describe(params: dict[str, Any]) -> str:
    parts = []
    for k, v in params.items():
        if k == "generators":
            v = [_member(g) for g in v]
        parts.append(f"{k}={v}")
    return ", ".join(parts)


def _member(spec: Any) -> str:
    if not isinstance(spec, dict):
        return str(spec)
    params = spec.get("params", {})
    return str(spec.get("name") or spec["kind"] + (f"{params}" if params else ""))


def parse_models(names: str | None) -> list[ModelSpec]:
    """Comma-separated kinds (or spec names) -> the default specs of those kinds."""
    specs = default_specs()
    if not names:
        return specs
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    allowed = sorted({s.kind for s in specs})
    bad = [n for n in wanted if n not in allowed]
    if bad:
        raise ConfigError(f"--models must be among {allowed}; got {bad}")
    return [s for s in specs if s.kind in wanted]
