"""Where trained models live: a directory per model version (meta.json + arrays.npz, and the
cold-start fallback fitted beside it in fallback/), named <name>/<version>, and which one is the
champion that serves.

Exactly one model is champion once any is promoted (champion.json, replaced atomically, keeps the
history for rollback). Commands load the champion unless told otherwise, else the newest."""

from __future__ import annotations

import builtins
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from feedrank.exceptions import NotFoundError
from feedrank.models import Recommender, model_class
from feedrank.models.popularity import PopularityRecommender

FALLBACK = "fallback"
TUNED = "_tuned"  # <root>/_tuned/<kind>.json: parameters chosen on validation

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
        self,
        model: Recommender,
        name: str | None = None,
        extra: dict[str, Any] | None = None,
        fallback: PopularityRecommender | None = None,
    ) -> ModelRecord:
        name = name or model.kind
        version = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        champion = self.champion()
        parent = f"{champion.name}/{champion.version}" if champion else None
        path = model.save(
            self.root / name / version,
            {"name": name, "version": version, "parent": parent, **(extra or {})},
        )
        if fallback is not None:
            fallback.save(path / FALLBACK)
        return self.record(path)

    # -- parameters chosen by `feedrank tune`, per family ------------------------------------------
    def _tuned_file(self, kind: str) -> Path:
        return self.root / TUNED / f"{kind}.json"

    def save_tuned(self, record: dict[str, Any]) -> Path:
        path = self._tuned_file(record["kind"])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2, default=str))
        tmp.replace(path)
        return path

    def tuned(self, kind: str) -> dict[str, Any] | None:
        """What `feedrank tune` chose for this family (None: never tuned)."""
        path = self._tuned_file(kind)
        return json.loads(path.read_text()) if path.exists() else None

    @staticmethod
    def record(path: Path) -> ModelRecord:
        meta = json.loads((path / "meta.json").read_text())
        return ModelRecord(meta.get("name", path.parent.name), path.name, meta["kind"], path, meta)

    def list(self) -> list[ModelRecord]:
        if not self.root.exists():
            return []
        return [self.record(p) for p in sorted(self.root.glob("*/*")) if (p / "meta.json").exists()]

    # -- champion --------------------------------------------------------------------------------
    @property
    def _champion_file(self) -> Path:
        return self.root / "champion.json"

    def _champion_state(self) -> dict[str, Any]:
        if not self._champion_file.exists():
            return {"history": []}
        state: dict[str, Any] = json.loads(self._champion_file.read_text())
        return state

    def _write_champion(self, state: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self._champion_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, self._champion_file)  # readers see the old file or the new, never half

    def champion(self) -> ModelRecord | None:
        history = self._champion_state()["history"]
        if not history:
            return None
        ref = history[-1]["model"]
        found = [r for r in self.list() if f"{r.name}/{r.version}" == ref]
        return found[0] if found else None

    def promote(self, ref: str, reason: str = "promoted by hand") -> ModelRecord:
        rec = self.resolve(ref, use_champion=False)
        state = self._champion_state()
        state["history"].append(
            {
                "model": f"{rec.name}/{rec.version}",
                "at": datetime.now(UTC).isoformat(),
                "reason": reason,
            }
        )
        self._write_champion(state)
        return rec

    def rollback(self) -> ModelRecord:
        """Make the previous champion the champion again."""
        state = self._champion_state()
        if len(state["history"]) < 2:
            raise NotFoundError("there is no earlier champion to roll back to")
        state["history"].pop()
        self._write_champion(state)
        champion = self.champion()
        if champion is None:
            raise NotFoundError(
                f"the earlier champion {state['history'][-1]['model']} no longer exists"
            )
        return champion

    def champion_history(self) -> builtins.list[dict[str, Any]]:
        history: list[dict[str, Any]] = self._champion_state()["history"]
        return history

    def resolve(self, name: str | None = None, use_champion: bool = True) -> ModelRecord:
        """A name (newest version), name/version, or None: the champion, else the newest model."""
        if name is None and use_champion:
            champion = self.champion()
            if champion is not None:
                return champion
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
        return model_class(rec.kind).load(rec.path), rec

    @staticmethod
    def fallback(rec: ModelRecord) -> PopularityRecommender | None:
        """The popularity fallback saved with a model (None for a model saved without one)."""
        path = rec.path / FALLBACK
        return PopularityRecommender.load(path) if (path / "meta.json").exists() else None
