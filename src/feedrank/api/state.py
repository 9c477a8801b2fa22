"""What the server serves from, and how it follows the store.

A ServingState holds the served model (fitted parameters and its fallback), the catalogue
(items and their counters: memory follows the catalogue, not the events), the active
generation, the store's watermark and settings. It is never changed in place: `refresh` reads
what the store says is new since the watermark (events, upserted items, erasures, a new
settings version — whoever wrote them, this process or another) and returns a new state, which
the server swaps in with one
assignment, so a request sees one consistent state to its end. Users' histories are not held:
each live request reads its user's events from the store."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, TypeVar

import polars as pl

from feedrank.exceptions import ConfigError, NotFoundError, ParameterError
from feedrank.models.base import Recommender
from feedrank.models.popularity import PopularityRecommender
from feedrank.pipeline.registry import ModelRecord, Registry
from feedrank.serving.rules import rewarm
from feedrank.serving.service import RecommendationService, empty_site
from feedrank.settings import Settings
from feedrank.store import Generation, Store
from feedrank.store.base import Watermark
from feedrank.views.catalogue import Catalogue, just_after
from feedrank.views.view import StoreView, newest_time, store_catalogue

log = logging.getLogger("feedrank.api")
T_ = TypeVar("T_")
MAX_OTHER_MODELS = 4  # models asked for by ?model= kept loaded beside the default
LIVE_CACHE_USERS = 20_000
LIVE_MAX_AGE = 5.0  # seconds a live answer outlives a newer catalogue (not the user's own events)
CATALOGUE_READS = 5  # attempts at a catalogue read no write came in during
REWARM_USERS = 256  # users whose model terms a new catalogue computes (the latest asked for)


@dataclass(frozen=True)
class Served:
    """A fitted model ready to serve, with its cold-start fallback."""

    model: Recommender
    fallback: PopularityRecommender | None
    label: str  # "name/version", or "popularity (no trained model)"
    record: ModelRecord | None

    def service(
        self, store: Store, catalogue: Catalogue, user_id: str, settings: Settings | None = None
    ) -> RecommendationService:
        """This model serving one user as stored now (their events read by index); the
        store's `settings` say which event types are negative feedback."""
        view = StoreView.for_user(store, self.model.settings_, catalogue, user_id)
        negative = settings.negative_types if settings is not None else None
        return RecommendationService(self.model, view, self.fallback, negative)


def load_served(registry: Registry, name: str | None, settings: Settings) -> Served:
    """A registry model (the champion, else the newest) with its fallback. Without any trained
    model the server still answers, from popularity, and says so in every response."""
    try:
        model, rec = registry.load(name)
        return Served(model, registry.fallback(rec), f"{rec.name}/{rec.version}", rec)
    except NotFoundError:
        if name:
            raise
        pop = PopularityRecommender().fit(empty_site(), settings)
        return Served(pop, None, "popularity (no trained model)", None)


@dataclass(frozen=True)
class ServingState:
    served: Served
    generation: Generation | None
    catalogue: Catalogue
    watermark: Watermark
    settings: Settings  # the store's settings (ingestion, experiments)
    settings_version: int | None = None  # the stored version they are (None: the defaults)
    others: OtherModels = field(default_factory=lambda: OtherModels())
    live: LiveCache = field(default_factory=lambda: LiveCache())

    @property
    def label(self) -> str:
        return self.served.label

    @property
    def generation_id(self) -> int | None:
        return self.generation.id if self.generation else None

    def served_for(self, name: str | None, registry: Registry) -> Served:
        """The default model, or another registry model (loaded on first use)."""
        if name is None or name == self.label:
            return self.served
        try:
            rec = registry.resolve(name)  # a bare name means its newest version
        except NotFoundError as exc:  # a request parameter naming nothing: 422, not 404
            raise ParameterError("model", str(exc)) from exc
        label = f"{rec.name}/{rec.version}"
        if label == self.label:
            return self.served
        return self.others.get(label, lambda: load_served(registry, label, self.settings))


def settings_version(store: Store) -> int | None:
    versions = store.settings_versions()
    return versions[-1][0] if versions else None


def read_catalogue(store: Store) -> tuple[Catalogue, Watermark]:
    """The store's catalogue and the watermark it is as of. Read again when a write came in
    between (another process's, or this one's writer thread): a change both read here and
    applied from the feed later would be counted twice. Under a stream of writes that never
    leaves a gap, the last read is kept with the watermark from before it."""
    for _ in range(CATALOGUE_READS):
        before = store.watermark()
        catalogue = store_catalogue(store)
        if store.watermark() == before:
            return catalogue, before
    log.warning("the store kept changing while its catalogue was read; counters may drift")
    return catalogue, before


def load_state(
    store: Store, registry: Registry, model_name: str | None, warm_users: int = 0
) -> ServingState:
    """Read the model, the catalogue and the generation once (no event is read but those of
    the `warm_users` newest active users, whose model terms are computed now)."""
    version = settings_version(store)
    settings = store.settings()
    catalogue, watermark = read_catalogue(store)
    state = ServingState(
        load_served(registry, model_name, settings),
        store.active_generation(),
        catalogue,
        watermark,
        settings,
        version,
    )
    warm_up(state, store, users=recent_users(store, warm_users) if warm_users else None)
    log.info("serving %s with generation %s", state.label, state.generation_id)
    return state


def _as_of(newest: datetime | None, previous: datetime) -> datetime:
    """The data's clock moves with the newest event (views.view.store_catalogue)."""
    return max(previous, just_after(newest)) if newest is not None else previous


def warm_up(
    state: ServingState,
    store: Store,
    previous: Catalogue | None = None,
    users: list[str] | None = None,
) -> None:
    """Compute the catalogue-wide part of scoring (e.g. the GLM's item logits) before a request
    needs it, the rule selections recently used on the `previous` catalogue that the new one
    does not share with it, and, for a model that keeps per-user terms (the GLM), those of
    `users`."""
    model = state.served.model
    scorer = model.at(StoreView(store, model.settings_, state.catalogue)).prepare()
    if previous is not None and previous is not state.catalogue:
        rewarm(previous, state.catalogue)
    # Only some models keep per-user terms: asked by duck typing, the Scorer contract is
    # unchanged.
    prepare_users = getattr(scorer, "prepare_users", None)
    if prepare_users is None:
        return
    if users:
        prepare_users(users)


def kept_users(state: ServingState, store: Store, n: int = REWARM_USERS) -> list[str]:
    """The users whose model terms were most recently asked for in `state` (none for a model
    that keeps no per-user terms)."""
    model = state.served.model
    scorer = model.at(StoreView(store, model.settings_, state.catalogue))
    kept = getattr(scorer, "kept_users", None)
    return kept(n) if kept is not None else []


def recent_users(store: Store, n: int) -> list[str]:
    """The n users with the newest events (one read of the counters, at start-up)."""
    counts = store.user_counts()
    newest = counts.group_by("user_id").agg(pl.col("last_ts").max()).sort("last_ts")
    return newest["user_id"].tail(n).reverse().to_list()


def refresh(
    state: ServingState,
    store: Store,
    registry: Registry,
    model_name: str | None,
    check_models: bool = True,
) -> ServingState | None:
    """A new state when the store, its settings, the registry (when `check_models`) or the
    generation moved since `state`; None when nothing did."""
    changes = store.changes(state.watermark)
    catalogue, watermark = state.catalogue, changes.until
    live = state.live
    if changes.erased:  # an erased user's events left the counters: read them again
        catalogue, watermark = read_catalogue(store)
        live = LiveCache()
    elif changes.events.height or changes.items.height:
        newest = newest_time(changes.events["timestamp"], changes.items)
        catalogue = catalogue.apply(changes.events, changes.items, _as_of(newest, catalogue.as_of))
    settings, version = state.settings, settings_version(store)
    if version != state.settings_version:  # stored by any process (PUT /settings, the CLI)
        try:
            settings = store.settings()
        except ConfigError as exc:  # keep following events and items with the settings we have
            log.warning("stored settings version %s not applied: %s", version, exc)
    served = state.served
    if check_models or changes.erased:
        current = _current_label(registry, model_name)
        # An erasure rewrote the model files without the user: load them again.
        if changes.erased or current != (served.label if served.record else None):
            served = load_served(registry, model_name, settings)
    generation = store.active_generation()
    if (
        catalogue is state.catalogue
        and served is state.served
        and version == state.settings_version
        and (generation.id if generation else None) == state.generation_id
        and watermark == state.watermark
    ):
        return None
    new = replace(
        state,
        served=served,
        generation=generation,
        catalogue=catalogue,
        watermark=watermark,
        settings=settings,
        settings_version=version,
        live=live,
        others=state.others if served is state.served else OtherModels(),
    )
    if catalogue is not state.catalogue or served is not state.served:
        warm_up(new, store, state.catalogue, kept_users(state, store))
    return new


def _current_label(registry: Registry, name: str | None) -> str | None:
    try:
        rec = registry.resolve(name)
    except NotFoundError:
        return None
    return f"{rec.name}/{rec.version}"


class OtherModels:
    """Models asked for by name, loaded on first use; bounded, oldest out first."""

    def __init__(self) -> None:
        self._d: OrderedDict[str, Served] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, label: str, load: Any) -> Served:
        with self._lock:
            if label in self._d:
                return self._d[label]
        served: Served = load()
        with self._lock:
            self._d[label] = served
            while len(self._d) > MAX_OTHER_MODELS:
                self._d.popitem(last=False)
            return served


@dataclass(frozen=True)
class _Live:
    sig: tuple[Any, ...]  # the user's newest event time and number of events when scored
    version: int  # the catalogue's version it was scored over
    covered: bool  # that catalogue already counted the user's newest event
    at: float  # the cache's clock when scored
    n: int  # rows asked for
    recs: Any  # an answer: len() is its number of rows


class LiveCache:
    """Live-scored top-N per (model, user, exclude_seen). An entry serves while the user's own
    events are unchanged (sig: their newest event's time and their number of events), and
    while the catalogue it was scored over is the current one or, when that catalogue already
    counted the user's newest event, at most `max_age` seconds old: other users' events move
    the counters every refresh, and re-scoring every live user for each of them would make
    the cache useless on a busy site. Concurrent misses for one key score once (the others
    wait for that answer). Bounded, least recently used out first."""

    def __init__(
        self,
        capacity: int = LIVE_CACHE_USERS,
        max_age: float = LIVE_MAX_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity, self.max_age, self._clock = capacity, max_age, clock
        self._d: OrderedDict[tuple[Any, ...], _Live] = OrderedDict()
        self._lock = threading.Lock()
        self._scoring: dict[tuple[Any, ...], threading.Lock] = {}

    def _valid(
        self, key: tuple[Any, ...], sig: tuple[Any, ...], version: int, n: int
    ) -> _Live | None:
        hit = self._d.get(key)
        if hit is None or hit.sig != sig:
            return None
        if hit.version != version and (not hit.covered or self._clock() - hit.at > self.max_age):
            return None
        if hit.n < n and len(hit.recs) >= hit.n:  # too short, and there was more to give
            return None
        self._d.move_to_end(key)
        return hit

    def get_or_score(
        self,
        key: tuple[Any, ...],
        sig: tuple[Any, ...],
        catalogue: Catalogue,
        n: int,
        score: Callable[[], T_],
    ) -> T_:
        """The cached answer for key, or score()'s (n rows asked for) over catalogue, kept."""
        version = catalogue.version
        newest = sig[0]
        covered = newest is None or newest < catalogue.as_of
        with self._lock:
            hit = self._valid(key, sig, version, n)
            if hit is not None:
                return hit.recs  # type: ignore[no-any-return]
            lock = self._scoring.setdefault(key, threading.Lock())
        with lock:
            with self._lock:  # scored by another request while this one waited?
                hit = self._valid(key, sig, version, n)
                if hit is not None:
                    return hit.recs  # type: ignore[no-any-return]
            recs = score()
            with self._lock:
                self._d[key] = _Live(sig, version, covered, self._clock(), n, recs)
                self._d.move_to_end(key)
                while len(self._d) > self.capacity:
                    self._d.popitem(last=False)
                self._scoring.pop(key, None)
            return recs

    def drop_user(self, user_id: str) -> None:
        with self._lock:
            for key in [k for k in self._d if k[1] == user_id]:
                del self._d[key]
