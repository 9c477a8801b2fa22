"""The demo store the dashboard is looked at on: the synthetic site `feedrank demo` makes, with
uniform slates (impressions carry their propensity, so off-policy estimates have a log), an A/B
test over its last days (impressions carry experiment and variant), the GLM and popularity
trained on a held-out week (with the diagnostics the Models page shows), the GLM champion, and an
active generation. Built once per test session."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from feedrank.datasets.demo import generate_site
from feedrank.experiments.ab import Experiment
from feedrank.io import import_frame
from feedrank.pipeline.registry import Registry
from feedrank.pipeline.score import score_all
from feedrank.pipeline.train import train
from feedrank.settings import Settings
from feedrank.store import open_store
from feedrank.views.site import read_site

DB = "demo.db"
MODELS = "demo.models"
EXPERIMENT = "home"
SHARES = {"glm": 0.5, "popularity": 0.5}
K = 50


def store_url(root: Path) -> str:
    return f"sqlite:///{root / DB}"


def with_experiment(events: pl.DataFrame, days: int) -> pl.DataFrame:
    """The last `days` days' impressions carry {"experiment", "variant"} beside their
    propensity: the site ran an A/B test then (variants assigned as the service assigns them)."""
    start = events["timestamp"].max() - pl.duration(days=days)  # type: ignore[operator]
    users = events["user_id"].unique().sort().to_list()
    variant = dict(zip(users, Experiment(EXPERIMENT, SHARES).assign(users), strict=True))
    tagged = (pl.col("type") == "impression") & (pl.col("timestamp") >= start)
    return events.with_columns(
        context=pl.when(tagged)
        .then(
            pl.concat_str(
                pl.col("context").str.strip_chars_end("}"),
                pl.lit(f', "experiment": "{EXPERIMENT}", "variant": "'),
                pl.col("user_id").replace_strict(variant, default=None),
                pl.lit('"}'),
            )
        )
        .otherwise(pl.col("context"))
    )


def build_site(root: Path, n_users: int = 2000, n_items: int = 400, days: int = 28) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    site = generate_site(
        n_users=n_users, n_items=n_items, days=days, seed=0, logging_policy="uniform"
    )
    settings = Settings(experiments={EXPERIMENT: SHARES})
    with open_store(store_url(root)) as store:
        store.put_settings(settings.to_dict())
        import_frame(store, "users", site.users, settings, strict=True)
        import_frame(store, "items", site.items, settings, strict=True)
        import_frame(store, "interactions", with_experiment(site.events, 21), settings, strict=True)
        data = read_site(store)
        registry = Registry(root / MODELS)
        for kind in ("popularity", "glm"):
            result = train(data, settings, kind, test_days=7)
            rec = registry.save(
                result.model,
                kind,
                {
                    "split": result.split,
                    "metrics": result.metrics(),
                    **result.diagnostics(settings),
                },
                fallback=result.fallback,
            )
        registry.promote(f"{rec.name}/{rec.version}", "the demo's model")
        score_all(store, result.model, f"{rec.name}/{rec.version}", result.fallback, k=K)
    return root
