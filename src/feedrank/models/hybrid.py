"""Hybrid recommenders over several candidate generators.

A generator is any recommender, named by kind (+ params): "ease", "itemknn", "content",
"popularity", ..., or "freshness" (newest items first, defined here). Each generator's scores
become two per-user features of an (user, item) pair over the items the user has not engaged
with: its min-max normalised score and its rank discount 1 / log2(1 + rank).

- `HybridRecommender` ("hybrid"), the Foundation's GLM idea over candidates: candidates are the
  union of each generator's top `n_candidates`; a penalised logistic GLM (models.glm.
  fit_logistic) on the standardised features learns how much each source counts, and
  `coef_table()` shows it. No leakage: inside `fit` one engaged item per user (with >= 2) is
  held out — the latest by timestamp (ties at random, seeded by `random_state`), or one at
  random with holdout="random" (for data whose time carries no signal) — the generators are fitted on the rest, and the training rows are the candidates of those users
  labelled by whether they are the held-out item. So a label is never seen by the generators
  whose scores are its features. The generators are then refitted on all the data for serving.
- `BlendRecommender` ("blend"): a fixed weighted sum of the generators' normalised scores
  (per-user min-max, or the rank discount).

Both rank non-candidates below candidates (hybrid) and score every catalogue item, so batch
and per-user results agree."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, Self

import numpy as np
import polars as pl
import scipy.sparse as sp
from scipy import stats

from feedrank.config import Settings
from feedrank.data.site import SiteData
from feedrank.exceptions import ConfigError
from feedrank.models.base import Recommender
from feedrank.models.freshness import FreshnessRecommender
from feedrank.models.glm import fit_logistic, sigmoid

GeneratorSpec = str | Mapping[str, Any] | Recommender


def generator_kinds() -> dict[str, type[Recommender]]:
    from feedrank.models import MODELS  # late: models/__init__ imports this module

    return {**MODELS, FreshnessRecommender.kind: FreshnessRecommender}


def _params(model: Recommender) -> dict[str, Any]:
    return {k: v for k, v in vars(model).items() if not k.endswith("_") and not k.startswith("_")}


def resolve(spec: GeneratorSpec) -> tuple[str, Recommender]:
    """A generator spec -> (name, an unfitted model): "kind", {"kind", "params", "name"}, or a
    model instance (used as a template: it is copied, never fitted in place)."""
    if isinstance(spec, Recommender):
        return spec.kind, copy.deepcopy(spec)
    kinds = generator_kinds()
    kind, params, name = (
        (spec, {}, spec)
        if isinstance(spec, str)
        else (spec.get("kind"), dict(spec.get("params", {})), spec.get("name", spec.get("kind")))
    )
    if kind not in kinds:
        raise ConfigError(f"generator kind must be one of {sorted(kinds)}; got '{kind}'")
    return str(name), kinds[str(kind)](**params)


def minmax_rows(S: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Per row, (s - min) / (max - min) over the unseen columns (0 where a row is constant)."""
    masked = np.where(seen, np.nan, S)
    with np.errstate(all="ignore"):
        lo = np.nanmin(masked, axis=1, keepdims=True)
        hi = np.nanmax(masked, axis=1, keepdims=True)
    lo, hi = np.nan_to_num(lo), np.nan_to_num(hi)
    span = np.where(hi > lo, hi - lo, 1.0)
    return np.where(hi > lo, (S - lo) / span, 0.0)


def rank_rows(S: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """1-based rank of each column within its row among unseen columns; ties share the best rank
    (so a constant generator ranks everything 1 and says nothing); seen columns come last."""
    keyed = np.where(seen, -np.inf, S)
    order = np.argsort(-keyed, axis=1, kind="stable")
    ordered = np.take_along_axis(keyed, order, axis=1)
    pos = np.arange(S.shape[1])[None, :]
    new = np.ones(S.shape, dtype=bool)
    new[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    start = np.maximum.accumulate(np.where(new, pos, 0), axis=1)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, start + 1, axis=1)
    return ranks


class _Ensemble(Recommender):
    """Shared machinery: generator specs, fitting clones, serving them, nested persistence."""

    generators: Sequence[GeneratorSpec]
    names_: list[str]
    generators_: list[Recommender]

    def _fit_generators(self, data: SiteData) -> list[Recommender]:
        return [resolve(s)[1].fit(data, self.settings_) for s in self.generators]

    def _prepare_serving(self) -> None:
        for g in self.generators_:
            if not (g.is_fitted and g.data_ is self.data_ and g.at_ == self.at_):
                g.serve_with(self.data_, self.at_)

    def _catalogue(self, item_ids: Sequence[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scoring runs over the serving catalogue plus any requested item, so ranks and
        normalisations do not depend on which items were asked for."""
        asked = np.asarray(item_ids, dtype=object)
        cat = self.item_ids_
        extra = asked[~np.isin(asked, cat)]
        full = np.concatenate([cat, np.unique(extra)]) if extra.size else cat
        pos = pl.DataFrame({"item_id": full}).with_row_index("__i")
        cols = (
            pl.DataFrame({"item_id": asked}, schema={"item_id": pl.String})
            .join(pos, on="item_id", how="left", maintain_order="left")["__i"]
            .to_numpy()
        )
        return full, cols

    def _features(
        self,
        models: Sequence[Recommender],
        users: Sequence[str],
        items: np.ndarray,
        seen: np.ndarray,
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        norm, ranks = [], []
        for g in models:
            S = np.nan_to_num(g.score(list(users), items).astype(np.float64), nan=0.0, neginf=0.0)
            norm.append(minmax_rows(S, seen))
            ranks.append(rank_rows(S, seen))
        return norm, ranks

    def _users_per_batch(self, batch_size: int, n_items: int) -> int:
        """Few enough users that a block's feature tensor stays under ~4M cells."""
        cells = max(1, n_items * 2 * len(self.generators))
        return min(batch_size, max(1, 4_000_000 // cells))

    def _generator_state(self) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
        metas, arrays = [], {}
        for i, (name, g) in enumerate(zip(self.names_, self.generators_, strict=True)):
            m, a = g._state()
            metas.append({"name": name, "kind": g.kind, "meta": m})
            arrays.update({f"g{i}__{k}": v for k, v in a.items()})
        return metas, arrays

    @staticmethod
    def _load_generators(
        metas: list[dict[str, Any]], arrays: dict[str, np.ndarray]
    ) -> list[Recommender]:
        kinds = generator_kinds()
        out = []
        for i, m in enumerate(metas):
            prefix = f"g{i}__"
            sub = {k.removeprefix(prefix): v for k, v in arrays.items() if k.startswith(prefix)}
            out.append(kinds[m["kind"]]._from_state(m["meta"], sub))
        return out

    def _spec_json(self) -> list[Any]:
        return [
            {"kind": g.kind, "name": n, "params": _params(g)}
            for n, g in zip(self.names_, self.generators_, strict=True)
        ]


class BlendRecommender(_Ensemble):
    """score = sum_g weight_g * norm_g(score_g) over the user's unseen items, where norm is
    "minmax" (per user) or "rank" (the rank discount 1 / log2(1 + rank), which ignores how far
    apart a generator's scores are); one normalisation for all generators or one each."""

    kind = "blend"

    def __init__(
        self,
        generators: Sequence[GeneratorSpec] = ("ease", "content"),
        weights: Sequence[float] | None = None,
        normalise: str | Sequence[str] = "minmax",
    ) -> None:
        self.generators = list(generators)
        self.weights = list(weights) if weights is not None else None
        self.normalise = normalise if isinstance(normalise, str) else list(normalise)

    def fit(self, data: SiteData, settings: Settings | None = None) -> Self:
        self.settings_ = settings or Settings()
        if not self.generators:
            raise ConfigError("generators must name at least one generator; got none")
        w = self.weights if self.weights is not None else [1.0] * len(self.generators)
        if len(w) != len(self.generators) or any(x < 0 for x in w) or sum(w) <= 0:
            raise ConfigError(
                f"weights must be {len(self.generators)} non-negative numbers, not all 0; got {w}"
            )
        self.weights_ = np.asarray(w, dtype=np.float64)
        norms = (
            [self.normalise] * len(self.generators)
            if isinstance(self.normalise, str)
            else list(self.normalise)
        )
        if len(norms) != len(self.generators) or set(norms) - {"minmax", "rank"}:
            raise ConfigError(
                f"normalise must be 'minmax' or 'rank' (or one of them per generator, "
                f"{len(self.generators)}); got {self.normalise}"
            )
        self.norms_ = norms
        self.names_ = [resolve(s)[0] for s in self.generators]
        self.generators_ = self._fit_generators(data)
        return self.serve_with(data)

    def score(self, user_ids: Sequence[str], item_ids: Sequence[str] | np.ndarray) -> np.ndarray:
        self._check()
        users = list(user_ids)
        full, cols = self._catalogue(item_ids)
        seen = self.seen_mask(users, full)
        norm, ranks = self._features(self.generators_, users, full, seen)
        out = np.zeros((len(users), len(full)))
        for w, how, n, r in zip(self.weights_, self.norms_, norm, ranks, strict=True):
            out += w * (n if how == "minmax" else 1.0 / np.log2(1.0 + r))
        return out[:, cols]

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        metas, arrays = self._generator_state()
        meta = {
            "params": {
                "generators": self._spec_json(),
                "weights": self.weights_.tolist(),
                "normalise": self.norms_,
            },
            "settings": self.settings_.to_dict(),
            "generators": metas,
            "names": self.names_,
        }
        return meta, arrays

    @classmethod
    def _from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Self:
        model = cls(**meta["params"])
        model.settings_ = Settings.from_dict(meta["settings"])
        model.weights_ = np.asarray(meta["params"]["weights"], dtype=np.float64)
        model.norms_ = list(meta["params"]["normalise"])
        model.names_ = list(meta["names"])
        model.generators_ = cls._load_generators(meta["generators"], arrays)
        return model


class HybridRecommender(_Ensemble):
    """A logistic GLM over the candidates of several generators (see the module docstring)."""

    kind = "hybrid"

    def __init__(
        self,
        generators: Sequence[GeneratorSpec] = (
            "ease",
            "itemknn",
            "content",
            "popularity",
            "freshness",
        ),
        n_candidates: int = 50,
        alpha: float = 1e-3,
        max_train_users: int = 2000,
        random_state: int = 0,
        holdout: str = "latest",
    ) -> None:
        self.generators = list(generators)
        self.n_candidates = n_candidates
        self.alpha = alpha
        self.max_train_users = max_train_users
        self.random_state = random_state
        self.holdout = holdout

    # -- fitting -----------------------------------------------------------------------------------
    def _holdout(self, data: SiteData) -> tuple[SiteData, pl.DataFrame]:
        """One engaged item per user with >= 2: the latest ("latest"; ties at random, seeded)
        or one at random ("random", seeded)."""
        eng = data.events.filter(
            pl.col("type").is_in(self.settings_.engagement_types) & (pl.col("item_id") != "")
        )
        last = (
            eng.group_by("user_id", "item_id")
            .agg(pl.col("timestamp").max())
            .sort("user_id", "item_id")
        )
        rng = np.random.default_rng(self.random_state)
        last = last.with_columns(
            __key=pl.Series(rng.random(last.height)), __n=pl.len().over("user_id")
        )
        if self.holdout == "random":
            last = last.with_columns(pl.lit(0).alias("timestamp"))
        held = (
            last.filter(pl.col("__n") >= 2)
            .sort("user_id", "timestamp", "__key", descending=[False, True, False])
            .group_by("user_id", maintain_order=True)
            .first()
            .select("user_id", "item_id")
        )
        if held.height > self.max_train_users:
            keep = rng.choice(held.height, self.max_train_users, replace=False)
            held = held[np.sort(keep)]
        events = data.events.join(
            held, on=["user_id", "item_id"], how="anti", maintain_order="left"
        )
        return SiteData(data.users, data.items, events), held

    def _rows(
        self,
        models: Sequence[Recommender],
        users: Sequence[str],
        items: np.ndarray,
        seen: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Feature tensor (users x items x features) and the candidate mask."""
        norm, ranks = self._features(models, users, items, seen)
        cand = np.zeros(seen.shape, dtype=bool)
        for n, r in zip(norm, ranks, strict=True):
            # A generator constant over a user's items proposes none of them.
            cand |= (r <= self.n_candidates) & (n.max(axis=1, keepdims=True) > 0)
        cand &= ~seen
        feats = []
        for n, r in zip(norm, ranks, strict=True):
            feats += [n, 1.0 / np.log2(1.0 + r)]
        return np.stack(feats, axis=2), cand

    def fit(self, data: SiteData, settings: Settings | None = None) -> Self:
        self.settings_ = settings or Settings()
        if not self.generators:
            raise ConfigError("generators must name at least one generator; got none")
        if self.holdout not in ("latest", "random"):
            raise ConfigError(f"holdout must be one of ['latest', 'random']; got '{self.holdout}'")
        if self.n_candidates < 1:
            raise ConfigError(f"n_candidates must be >= 1; got {self.n_candidates}")
        self.names_ = [resolve(s)[0] for s in self.generators]
        if len(set(self.names_)) != len(self.names_):
            raise ConfigError(f"generator names must be distinct (give 'name'); got {self.names_}")
        inner, held = self._holdout(data)
        if held.is_empty():
            raise ConfigError("the hybrid needs users with >= 2 engaged items to learn its blend")
        models = self._fit_generators(inner)
        items = models[0].item_ids_
        held_col = (
            held.join(
                pl.DataFrame({"item_id": items}, schema={"item_id": pl.String}).with_row_index(
                    "__i"
                ),
                on="item_id",
                how="left",
                maintain_order="left",
            )["__i"]
            .fill_null(-1)
            .to_numpy()
        )
        users = held["user_id"].to_list()
        xs, ys = [], []
        step = self._users_per_batch(len(users), len(items))
        for s in range(0, len(users), step):
            block = users[s : s + step]
            seen = models[0].seen_mask(block, items)
            X3, cand = self._rows(models, block, items, seen)
            y2 = np.zeros(seen.shape, dtype=bool)
            hc = held_col[s : s + step]
            y2[np.flatnonzero(hc >= 0), hc[hc >= 0]] = True
            xs.append(X3[cand])
            ys.append(y2[cand])
        X = np.concatenate(xs)
        y = np.concatenate(ys).astype(np.float64)
        if y.sum() == 0 or y.sum() == len(y):
            raise ConfigError(
                f"no held-out item is among the {self.n_candidates} candidates of any user: "
                "raise n_candidates"
            )
        self.feature_names_ = [f"{n}_{f}" for n in self.names_ for f in ("score", "rank")]
        self.mean_ = X.mean(axis=0)
        sd = X.std(axis=0)
        self.scale_ = np.where(sd > 0, sd, 1.0)
        Z = np.where(sd > 0, (X - self.mean_) / self.scale_, 0.0)
        self.coef_, self.intercept_, self.se_ = fit_logistic(sp.csr_matrix(Z), y, self.alpha, 0.0)
        self.n_train_rows_, self.positive_rate_ = len(y), float(y.mean())
        self.generators_ = self._fit_generators(data)
        return self.serve_with(data)

    # -- serving -----------------------------------------------------------------------------------
    def score(self, user_ids: Sequence[str], item_ids: Sequence[str] | np.ndarray) -> np.ndarray:
        """Candidates get the GLM's probability; other items probability - 1 (below every
        candidate, still ordered by the GLM)."""
        self._check()
        users = list(user_ids)
        full, cols = self._catalogue(item_ids)
        seen = self.seen_mask(users, full)
        X3, cand = self._rows(self.generators_, users, full, seen)
        z = ((X3 - self.mean_) / self.scale_) @ self.coef_ + self.intercept_
        p = sigmoid(z)
        return np.where(cand | seen, p, p - 1.0)[:, cols]

    def coef_table(self) -> pl.DataFrame:
        """Per feature: source, coefficient (per standard deviation of the feature), standard
        error, z, p-value; and each source's share of the total |coefficient|."""
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(self.se_[1:] > 0, self.coef_ / self.se_[1:], np.nan)
        sources = [n for n in self.names_ for _ in range(2)]
        total = np.abs(self.coef_).sum()
        share = (
            pl.DataFrame({"source": sources, "a": np.abs(self.coef_)})
            .group_by("source")
            .agg(source_share=pl.col("a").sum() / (total if total > 0 else 1.0))
        )
        table = pl.DataFrame(
            {
                "feature": self.feature_names_,
                "source": sources,
                "coefficient": self.coef_,
                "std_error": self.se_[1:],
                "z": z,
                "p_value": 2 * stats.norm.sf(np.abs(z)),
            }
        )
        return table.join(share, on="source", how="left", maintain_order="left").sort(
            "coefficient", descending=True
        )

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        metas, arrays = self._generator_state()
        meta = {
            "params": {
                "generators": self._spec_json(),
                "n_candidates": self.n_candidates,
                "alpha": self.alpha,
                "max_train_users": self.max_train_users,
                "random_state": self.random_state,
                "holdout": self.holdout,
            },
            "settings": self.settings_.to_dict(),
            "generators": metas,
            "names": self.names_,
            "feature_names": self.feature_names_,
            "intercept": self.intercept_,
            "n_train_rows": self.n_train_rows_,
            "positive_rate": self.positive_rate_,
        }
        arrays.update(
            {"coef": self.coef_, "se": self.se_, "mean": self.mean_, "scale": self.scale_}
        )
        return meta, arrays

    @classmethod
    def _from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Self:
        model = cls(**meta["params"])
        model.settings_ = Settings.from_dict(meta["settings"])
        model.names_ = list(meta["names"])
        model.feature_names_ = list(meta["feature_names"])
        model.intercept_ = float(meta["intercept"])
        model.n_train_rows_ = int(meta["n_train_rows"])
        model.positive_rate_ = float(meta["positive_rate"])
        model.coef_, model.se_ = arrays["coef"], arrays["se"]
        model.mean_, model.scale_ = arrays["mean"], arrays["scale"]
        model.generators_ = cls._load_generators(meta["generators"], arrays)
        return model
