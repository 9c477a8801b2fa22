"""What the server serves from: the model and the active generation loaded once, and the
per-process bookkeeping of freshness. A ServingState is immutable once built; the server swaps
the whole object in one assignment when a new model or generation appears, so a request that
picked up a state sees one consistent model + generation to its end."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import polars as pl

from feedrank.config import Settings
from feedrank.data.site import SiteData
from feedrank.exceptions import NotFoundError
from feedrank.models import PopularityRecommender
from feedrank.models.base import Recommender
from feedrank.pipeline.recommend import RecommendationService
from feedrank.pipeline.registry import ModelRecord, Registry
from feedrank.store import Generation, Store

log = logging.getLogger("feedrank.api")
MAX_OTHER_MODELS = 4  # models asked for by ?model= kept loaded beside the default
LIVE_CACHE_USERS = 20_000


@dataclass
class ServingState:
    model: Recommender
    label: str  # "name/version", or "popularity (no trained model)"
    record: ModelRecord | None
    generation: Generation | None
    service: RecommendationService
    data: SiteData
    loaded_at: float  # time.time() when the data was read
    seen: dict[str, list[str]]  # user -> items engaged with, in the loaded data
    others: dict[str, RecommendationService] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    live: LiveCache = field(default_factory=lambda: LiveCache())

    @cached_property
    def catalogue(self) -> np.ndarray:
        """The loaded items' ids, sorted: what a random slate draws from."""
        return np.sort(self.data.items["item_id"].unique().to_numpy().astype(object))

    @property
    def generation_id(self) -> int | None:
        return self.generation.id if self.generation else None

    def service_for(
        self, name: str | None, registry: Registry
    ) -> tuple[RecommendationService, str]:
        """The default model's service, or another registry model's (loaded on first use,
        served against the same data)."""
        if name is None or name == self.label:
            return self.service, self.label
        rec = registry.resolve(name)  # a bare name means its newest version
        label = f"{rec.name}/{rec.version}"
        if label == self.label:
            return self.service, self.label
        with self.lock:
            if label not in self.others:
                model, _ = registry.load(label)
                model.serve_with(self.data, self.model.at_)
                if len(self.others) >= MAX_OTHER_MODELS:
                    self.others.pop(next(iter(self.others)))
                self.others[label] = RecommendationService(model)
            return self.others[label], label


def load_state(
    store: Store, registry: Registry, model_name: str | None, settings: Settings
) -> ServingState:
    """Read the store and the model once. Without any trained model the server still answers,
    from popularity, and says so in every response's `model`."""
    t0 = time.time()
    generation = store.active_generation()
    data = store.load()
    record: ModelRecord | None
    try:
        model, record = registry.load(model_name)
        label = f"{record.name}/{record.version}"
    except NotFoundError:
        if model_name:
            raise
        model, record = PopularityRecommender().fit(data, settings), None
        label = "popularity (no trained model)"
    model.serve_with(data)
    service = RecommendationService(model)
    warm_up(model)
    log.info("serving %s with generation %s", label, generation.id if generation else None)
    return ServingState(
        model, label, record, generation, service, data, t0, engaged_items(data, settings)
    )


def engaged_items(data: SiteData, settings: Settings) -> dict[str, list[str]]:
    """Per user, the items they engaged with: what the generation path removes. Users who
    engage through the server after the load are served live, from the store."""
    per_user = (
        data.events.filter(
            pl.col("type").is_in(settings.engagement_types) & (pl.col("item_id") != "")
        )
        .group_by("user_id")
        .agg(pl.col("item_id").unique())
    )
    return dict(zip(per_user["user_id"].to_list(), per_user["item_id"].to_list(), strict=True))


def warm_up(model: Recommender) -> None:
    """Compute the item half of the factorised logit once, before the first request needs it."""
    scorer: Any = getattr(model, "scorer_", None)
    if scorer is not None:
        scorer.item_part(model.item_ids_)


class LiveCache:
    """Live-scored top-N per (model, user, exclude_seen), valid until the user engages again
    (the signature: their engagement count and the time of the last write through this server
    that marked them). A user who just acted pays for one live scoring, not one per request.
    Bounded, least recently used out first."""

    def __init__(self, capacity: int = LIVE_CACHE_USERS) -> None:
        self.capacity = capacity
        self._d: OrderedDict[tuple[Any, ...], tuple[tuple[Any, ...], pl.DataFrame]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...], sig: tuple[Any, ...]) -> pl.DataFrame | None:
        with self._lock:
            hit = self._d.get(key)
            if hit is None or hit[0] != sig:
                return None
            self._d.move_to_end(key)
            return hit[1]

    def put(self, key: tuple[Any, ...], sig: tuple[Any, ...], recs: pl.DataFrame) -> None:
        with self._lock:
            self._d[key] = (sig, recs)
            self._d.move_to_end(key)
            while len(self._d) > self.capacity:
                self._d.popitem(last=False)


@dataclass
class Freshness:
    """Users with events the active generation has not seen (ingested through this process),
    profiles upserted since the load, and users erased since the load."""

    dirty: dict[str, float] = field(default_factory=dict)  # user_id -> time.time() of the write
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def touch(self, user_ids: list[str]) -> None:
        now = time.time()
        with self.lock:
            for u in user_ids:
                self.dirty[u] = now

    def is_dirty(self, user_id: str) -> bool:
        return user_id in self.dirty

    def set_profile(self, user_id: str, row: dict[str, Any]) -> None:
        with self.lock:
            self.profiles[user_id] = row
            self.dirty[user_id] = time.time()

    def erase(self, user_id: str) -> None:
        with self.lock:
            self.profiles[user_id] = {"user_id": user_id}  # the loaded profile no longer counts
            self.dirty[user_id] = time.time()  # served live (from nothing) until the next load

    def settled(self, state: ServingState) -> None:
        """After a swap: a user's mark is dropped when both the generation and the loaded data
        were made after it."""
        gen_t = state.generation.created_at.timestamp() if state.generation else 0.0
        cut = min(gen_t, state.loaded_at)
        with self.lock:
            for u in [u for u, t in self.dirty.items() if t < cut]:
                del self.dirty[u]
            for u in [u for u in self.profiles if u not in self.dirty]:
                del self.profiles[u]

    def profile_frame(self, state: ServingState, user_id: str) -> pl.DataFrame:
        """The user's profile row: the one upserted since the load, else the loaded one."""
        row = self.profiles.get(user_id)
        if row is not None:
            return pl.DataFrame([row])
        users = state.data.users
        found = users.filter(pl.col("user_id") == user_id)
        if found.is_empty():
            return pl.DataFrame({"user_id": [user_id]}, schema={"user_id": pl.String})
        return found
