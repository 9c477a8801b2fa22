"""Erasure that leaves no trace: a user's events, profile, counters and recommendations in the
store (whose freed pages are zeroed and whose WAL is checkpointed), their rows and ids in every
model file of the registry (factor rows, neighbour rows; fallbacks included), and their rows in
every Parquet file beside the models (the frozen benchmark's held-out pairs and examples).

The model files go first: the store's erasure is what tells every server (through its change
feed) to drop the user and to load the rewritten models."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from feedrank.exceptions import RowError, ValidationError
from feedrank.models import model_class
from feedrank.pipeline.registry import FALLBACK, Registry
from feedrank.schema import MAX_ID_CHARS
from feedrank.store import Store


def check_user_id(user_id: str) -> str:
    """The id rules of ingestion: what could not be stored cannot be erased either."""
    if not user_id.strip() or len(user_id) > MAX_ID_CHARS:
        raise ValidationError(
            [
                RowError(
                    None,
                    "user_id",
                    f"user_id must be 1 to {MAX_ID_CHARS} characters; got {len(user_id)}",
                )
            ]
        )
    return user_id.strip()


def erase_user(store: Store, registry: Registry, user_id: str) -> dict[str, Any]:
    """Erase one user everywhere; what was removed, per place."""
    user_id = check_user_id(user_id)
    files = forget_in_files(registry, [user_id])
    removed = store.delete_user(user_id)
    return {**removed, "files": files}


def forget_in_files(registry: Registry, user_ids: Sequence[str]) -> int:
    """Rewrite every model and Parquet file under the registry that holds these users; the
    number of files rewritten (each replaced atomically)."""
    ids = set(user_ids)
    rewritten = 0
    for rec in registry.list():
        for path in (rec.path, rec.path / FALLBACK):
            rewritten += _forget_in_model(path, ids)
    if registry.root.exists():
        for parquet in sorted(registry.root.rglob("*.parquet")):
            rewritten += _forget_in_parquet(parquet, ids)
    return rewritten


def _forget_in_model(path: Path, ids: set[str]) -> int:
    if not (path / "meta.json").exists():
        return 0
    model = model_class(Registry.record(path).kind).load(path)
    kept = model.without_users(sorted(ids))
    if kept is model:
        return 0
    _, arrays = kept.dump()
    tmp = path / "arrays.npz.tmp"
    with tmp.open("wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]
    os.replace(tmp, path / "arrays.npz")
    return 1


def _forget_in_parquet(path: Path, ids: set[str]) -> int:
    df = pl.read_parquet(path)
    if "user_id" not in df.columns:
        return 0
    kept = df.filter(~pl.col("user_id").cast(pl.String).is_in(sorted(ids)))
    if kept.height == df.height:
        return 0
    tmp = path.with_name(path.name + ".tmp")
    kept.write_parquet(tmp)
    os.replace(tmp, path)
    return 1
