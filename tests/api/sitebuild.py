"""A small synthetic site in a SQLite store with a trained GLM and an active generation: built
once per test session (per worker), copied per test since tests write to it."""

from __future__ import annotations

import shutil
from pathlib import Path

from feedrank.settings import Settings
from feedrank.datasets.demo import generate_site
from feedrank.io import import_frame
from feedrank.serving.service import RecommendationService
from feedrank.pipeline.registry import Registry
from feedrank.pipeline.train import train_glm
from feedrank.store import open_store

DB = "site.db"
MODELS = "site.models"
K = 30  # recommendations per user in the generation


def build_site(root: Path, n_users: int = 120, n_items: int = 40, days: int = 8) -> Path:
    """root/site.db (users, items, events, an active generation) and root/site.models (GLM)."""
    root.mkdir(parents=True, exist_ok=True)
    site = generate_site(n_users=n_users, n_items=n_items, days=days, seed=3)
    store = open_store(f"sqlite:///{root / DB}")
    import_frame(store, "users", site.users, strict=True)
    import_frame(store, "items", site.items, strict=True)
    import_frame(store, "interactions", site.events, strict=True)
    data = store.load()
    model = train_glm(data, Settings(), test_days=2).model.serve_with(data)
    rec = Registry(root / MODELS).save(model, "glm")
    recs = RecommendationService(model).recommend(data.users["user_id"].to_list(), K)
    store.write_generation(recs, f"{rec.name}/{rec.version}")
    store.close()
    return root


def copy_site(template: Path, dest: Path) -> Path:
    shutil.copytree(template, dest)
    return dest
