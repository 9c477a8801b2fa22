"""A small synthetic site in a SQLite store with a trained GLM (saved with its fallback) and an
active generation: built once per test session (per worker), copied per test since tests write
to it."""

from __future__ import annotations

import shutil
from pathlib import Path

from feedrank.datasets.demo import generate_site
from feedrank.io import import_frame
from feedrank.pipeline.registry import Registry
from feedrank.pipeline.score import score_all
from feedrank.pipeline.train import train
from feedrank.settings import Settings
from feedrank.store import open_store
from feedrank.views.site import read_site

DB = "site.db"
MODELS = "site.models"
K = 30  # recommendations per user in the generation


def store_url(root: Path) -> str:
    return f"sqlite:///{root / DB}"


def build_site(root: Path, n_users: int = 120, n_items: int = 40, days: int = 8) -> Path:
    """root/site.db (users, items, events, an active generation) and root/site.models (GLM)."""
    root.mkdir(parents=True, exist_ok=True)
    site = generate_site(n_users=n_users, n_items=n_items, days=days, seed=3)
    with open_store(store_url(root)) as store:
        import_frame(store, "users", site.users, strict=True)
        import_frame(store, "items", site.items, strict=True)
        import_frame(store, "interactions", site.events, strict=True)
        result = train(read_site(store), Settings(), "glm", test_days=2)
        rec = Registry(root / MODELS).save(result.model, "glm", fallback=result.fallback)
        score_all(store, result.model, f"{rec.name}/{rec.version}", result.fallback, k=K)
    return root


def copy_site(template: Path, dest: Path) -> Path:
    shutil.copytree(template, dest)
    return dest
