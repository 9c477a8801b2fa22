"""Where trained models live: a directory per model version (meta.json + arrays.npz), named
<name>/<version>. The newest version of a name is what commands load unless told otherwise."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from feedrank.exceptions import NotFoundError
from feedrank.models import MODELS, Recommender

DEFAULT_DIR = "feedrank_models"


def models_dir(store_url: str, explicit: str | None = None) -> Path:
    """Explicit dir, else FEEDRANK_MODELS, else beside an SQLite file, else ./feedrank_models."""
    if explicit:
        return Path(explicit)
    if os.environ.get("FEEDRANK_MODELS"):
        return Path(os.environ["FEEDRANK_MODELS"])
    if store_url.startswith("sqlite:///") and ":memory:" not in store_url:
        db = Path(store_url.removeprefix("sqlite:///"))
        return db.parent / f"{db.stem}.models"
    return Path(DEFAULT_DIR)


@dataclass(frozen=True)
class ModelRecord:
    name: str
    version: str
    kind: str
    path: Path
    meta: dict[str, Any]


class Registry:
    def __init__(self, root: Path) -> None:
        self.root = root

    def save(
        self, model: Recommender, name: str | None = None, extra: dict[str, Any] | None = None
    ) -> ModelRecord:
        name = name or model.kind
        version = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        path = model.save(
            self.root / name / version, {"name": name, "version": version, **(extra or {})}
        )
        return self.record(path)

    def record(self, path: Path) -> ModelRecord:
        meta = json.loads((path / "meta.json").read_text())
        return ModelRecord(meta.get("name", path.parent.name), path.name, meta["kind"], path, meta)

    def list(self) -> list[ModelRecord]:
        if not self.root.exists():
            return []
        return [self.record(p) for p in sorted(self.root.glob("*/*")) if (p / "meta.json").exists()]

    def resolve(self, name: str | None = None) -> ModelRecord:
        """A name (newest version), name/version, or None for the newest model of any name."""
        records = self.list()
        if name and "/" in name:
            found = [r for r in records if f"{r.name}/{r.version}" == name]
        elif name:
            found = [r for r in records if r.name == name]
        else:
            found = records
        if not found:
            known = sorted({r.name for r in records})
            raise NotFoundError(
                f"model must be one of {known} (in {self.root}); got '{name or 'any'}'"
                if known
                else f"no trained model in {self.root}: run `feedrank train` first"
            )
        return max(found, key=lambda r: r.version)

    def load(self, name: str | None = None) -> tuple[Recommender, ModelRecord]:
        rec = self.resolve(name)
        return MODELS[rec.kind].load(rec.path), rec
