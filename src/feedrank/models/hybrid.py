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

from feedrank.exceptions import ConfigError
from feedrank.models.base import Recommender, Scorer, seen_mask
from feedrank.models.glm import fit_logistic, sigmoid
from feedrank.settings import Settings
from feedrank.views.site import SiteData
from feedrank.views.view import FrameView, View

GeneratorSpec = str | Mapping[str, Any] | Recommender


def resolve(spec: GeneratorSpec) -> tuple[str, Recommender]:
    """A generator spec -> (name, an unfitted model): "kind", {"kind", "params", "name"}, or a
    model instance (used as a template: it is copied, never fitted in place)."""
    if isinstance(spec, Recommender):
        return spec.kind, copy.deepcopy(spec)
    from feedrank.models import make  # late: the registry names this module

    kind, params, name = (
        (spec, {}, spec)
        if isinstance(spec, str)
        else (spec.get("kind"), dict(spec.get("params", {})), spec.get("name", spec.get("kind")))
    )
    return str(name), make(str(kind), **params)


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
    """Shared machinery: generator specs, fitting clones, scoring them through one history
    read, nested persistence."""

    generators: Sequence[GeneratorSpec]
    names_: list[str]
    generators_: list[Recommender]

    def _fit_generators(self, data: SiteData) -> list[Recommender]:
        return [resolve(s)[1].fit(data, self.settings_) for s in self.generators]

    def get_params(self) -> dict[str, Any]:
        params = super().get_params()
        params["generators"] = [_spec_json(s) for s in self.generators]
        return params

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        metas, arrays = [], {}
        for i, g in enumerate(self.generators_):
            m, a = g.dump()
            metas.append(m)
            arrays.update({f"g{i}__{k}": v for k, v in a.items()})
        return {"generators_fitted": metas, "names": self.names_}, arrays

    def _drop_users(
        self, meta: dict[str, Any], arrays: dict[str, np.ndarray], user_ids: set[str]
    ) -> bool:
        dropped = False
        for i, (g, m) in enumerate(zip(self.generators_, meta["generators_fitted"], strict=True)):
            prefix = f"g{i}__"
            sub = {k.removeprefix(prefix): v for k, v in arrays.items() if k.startswith(prefix)}
            if g._drop_users(m, sub, user_ids):
                arrays.update({f"{prefix}{k}": v for k, v in sub.items()})
                dropped = True
        return dropped

    def _load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        from feedrank.models import model_class

        self.names_ = list(meta["names"])
        self.generators_ = []
        for i, m in enumerate(meta["generators_fitted"]):
            prefix = f"g{i}__"
            sub = {k.removeprefix(prefix): v for k, v in arrays.items() if k.startswith(prefix)}
            self.generators_.append(model_class(m["kind"]).restore(m, sub))


def _spec_json(spec: GeneratorSpec) -> Any:
    if isinstance(spec, Recommender):
        return {"kind": spec.kind, "params": spec.get_params()}
    return dict(spec) if isinstance(spec, Mapping) else spec


class _EnsembleScorer(Scorer):
    """Scores every generator on one read of the users' histories. Scoring runs over the view's
    candidates plus any requested item, so ranks and normalisations do not depend on which
    items were asked for."""

    model: _Ensemble

    def __init__(self, model: _Ensemble, view: View, generators: Sequence[Recommender]) -> None:
        super().__init__(model, view)
        self.scorers = [g.at(view) for g in generators]

    def prepare(self) -> _EnsembleScorer:
        for sc in self.scorers:
            sc.prepare()
        return self

    def _catalogue(self, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        asked = np.asarray(item_ids, dtype=object)
        cat = self.view.candidates()
        extra = asked[~np.isin(asked, cat)]
        full = np.concatenate([cat, np.unique(extra)]) if extra.size else cat
        pos = pl.DataFrame({"item_id": full}, schema={"item_id": pl.String}).with_row_index("__i")
        cols = (
            pl.DataFrame({"item_id": asked}, schema={"item_id": pl.String})
            .join(pos, on="item_id", how="left", maintain_order="left")["__i"]
            .to_numpy()
        )
        return full, cols

    def features(
        self, users: Sequence[str], histories: pl.DataFrame, items: np.ndarray, seen: np.ndarray
    ) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
        """Per generator, normalised scores and rank discounts; and per user, whether a
        personal generator has a signal (else the ensemble has none: its answer would be
        popularity or freshness under another name)."""
        norm, ranks = [], []
        personal = np.zeros(len(users), dtype=bool)
        for sc in self.scorers:
            raw = sc.score_users(users, histories, items).astype(np.float64)
            if sc.model.personal:
                personal |= np.isfinite(raw).any(axis=1)
            S = np.nan_to_num(raw, nan=0.0, neginf=0.0)
            norm.append(minmax_rows(S, seen))
            ranks.append(rank_rows(S, seen))
        return norm, ranks, personal

    def recommend(
        self,
        user_ids: Sequence[str],
        k: int = 10,
        exclude_seen: bool = True,
        batch_size: int | None = None,
    ) -> pl.DataFrame:
        # Few enough users that a block's feature tensor stays under ~4M cells.
        cells = max(1, len(self.view.candidates()) * 2 * len(self.scorers))
        step = min(batch_size or 512, max(1, 4_000_000 // cells))
        return super().recommend(user_ids, k, exclude_seen, step)


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
        self._fitted_on(data, settings)
        if not self.generators:
            raise ConfigError("generators must name at least one generator; got none")
        w = self.weights if self.weights is not None else [1.0] * len(self.generators)
        if len(w) != len(self.generators) or any(x < 0 for x in w) or sum(w) <= 0:
            raise ConfigError(
                f"weights must be {len(self.generators)} non-negative numbers, not all 0; got {w}"
            )
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
        self.names_ = [resolve(s)[0] for s in self.generators]
        self.generators_ = self._fit_generators(data)
        return self

    def at(self, view: View) -> BlendScorer:
        return BlendScorer(self, view, self.generators_)


class BlendScorer(_EnsembleScorer):
    model: BlendRecommender

    def score_users(
        self, user_ids: Sequence[str], histories: pl.DataFrame, item_ids: np.ndarray
    ) -> np.ndarray:
        m = self.model
        users = list(user_ids)
        full, cols = self._catalogue(item_ids)
        seen = seen_mask(histories, users, full)
        norm, ranks, personal = self.features(users, histories, full, seen)
        weights = m.weights if m.weights is not None else [1.0] * len(norm)
        norms = [m.normalise] * len(norm) if isinstance(m.normalise, str) else m.normalise
        out = np.zeros((len(users), len(full)))
        for w, how, n, r in zip(weights, norms, norm, ranks, strict=True):
            out += w * (n if how == "minmax" else 1.0 / np.log2(1.0 + r))
        if any(sc.model.personal for sc in self.scorers):
            out[~personal] = np.nan
        return out[:, cols]


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
        last = (
            data.engagements(self.settings_)
            .group_by("user_id", "item_id")
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

    def fit(self, data: SiteData, settings: Settings | None = None) -> Self:
        self._fitted_on(data, settings)
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
            raise ConfigError(
                f"the {self.kind} model needs users with >= 2 engaged items to learn its blend"
            )
        X, y, groups = self._candidate_rows(inner, held)
        if y.sum() == 0 or y.sum() == len(y):
            raise ConfigError(
                f"no held-out item is among the {self.n_candidates} candidates of any user: "
                "raise n_candidates"
            )
        self._learn(X, y, groups)
        self.n_train_rows_, self.positive_rate_ = len(y), float(y.mean())
        self.generators_ = self._fit_generators(data)
        return self

    def _candidate_rows(
        self, inner: SiteData, held: pl.DataFrame
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Features of the held-out users' candidates (rows grouped by user, in order), whether
        each is the held-out item, and the candidates per user; the generators fitted on
        `inner`, which lacks the held-out items."""
        view = FrameView(inner, self.settings_)
        scorer = self.at(view, self._fit_generators(inner))
        items = view.candidates()
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
        xs, ys, groups = [], [], []
        cells = max(1, len(items) * 2 * len(self.generators))
        step = min(len(users), max(1, 4_000_000 // cells))
        for s in range(0, len(users), step):
            block = users[s : s + step]
            hist = view.histories(block)
            seen = seen_mask(hist, block, items)
            X3, cand, _ = scorer.rows(block, hist, items, seen)
            y2 = np.zeros(seen.shape, dtype=bool)
            hc = held_col[s : s + step]
            y2[np.flatnonzero(hc >= 0), hc[hc >= 0]] = True
            xs.append(X3[cand])
            ys.append(y2[cand])
            groups.append(cand.sum(axis=1))
        return np.concatenate(xs), np.concatenate(ys).astype(np.float64), np.concatenate(groups)

    def _learn(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray) -> None:
        """The GLM over standardised features."""
        self.feature_names_ = [f"{n}_{f}" for n in self.names_ for f in ("score", "rank")]
        self.mean_ = X.mean(axis=0)
        sd = X.std(axis=0)
        self.scale_ = np.where(sd > 0, sd, 1.0)
        Z = np.where(sd > 0, (X - self.mean_) / self.scale_, 0.0)
        self.coef_, self.intercept_, self.se_ = fit_logistic(sp.csr_matrix(Z), y, self.alpha, 0.0)

    def _probability(self, X3: np.ndarray) -> np.ndarray:
        """users x items x features -> a score in (0, 1) (here the GLM's probability)."""
        return sigmoid(((X3 - self.mean_) / self.scale_) @ self.coef_ + self.intercept_)

    def at(self, view: View, generators: Sequence[Recommender] | None = None) -> HybridScorer:
        return HybridScorer(self, view, self.generators_ if generators is None else generators)

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
        meta, arrays = super()._state()
        meta.update(
            {
                "feature_names": self.feature_names_,
                "intercept": self.intercept_,
                "n_train_rows": self.n_train_rows_,
                "positive_rate": self.positive_rate_,
            }
        )
        arrays.update(
            {"coef": self.coef_, "se": self.se_, "mean": self.mean_, "scale": self.scale_}
        )
        return meta, arrays

    def _load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        super()._load_state(meta, arrays)
        self.feature_names_ = list(meta["feature_names"])
        self.intercept_ = float(meta["intercept"])
        self.n_train_rows_ = int(meta["n_train_rows"])
        self.positive_rate_ = float(meta["positive_rate"])
        self.coef_, self.se_ = arrays["coef"], arrays["se"]
        self.mean_, self.scale_ = arrays["mean"], arrays["scale"]


class HybridScorer(_EnsembleScorer):
    model: HybridRecommender

    def rows(
        self, users: Sequence[str], histories: pl.DataFrame, items: np.ndarray, seen: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Feature tensor (users x items x features), the candidate mask, and whether each
        user has a personal signal (see features)."""
        norm, ranks, personal = self.features(users, histories, items, seen)
        cand = np.zeros(seen.shape, dtype=bool)
        for n, r in zip(norm, ranks, strict=True):
            # A generator constant over a user's items proposes none of them.
            cand |= (r <= self.model.n_candidates) & (n.max(axis=1, keepdims=True) > 0)
        cand &= ~seen
        feats = []
        for n, r in zip(norm, ranks, strict=True):
            feats += [n, 1.0 / np.log2(1.0 + r)]
        return np.stack(feats, axis=2), cand, personal

    def score_users(
        self, user_ids: Sequence[str], histories: pl.DataFrame, item_ids: np.ndarray
    ) -> np.ndarray:
        """Candidates get the GLM's probability; other items probability - 1 (below every
        candidate, still ordered by the GLM)."""
        m = self.model
        users = list(user_ids)
        full, cols = self._catalogue(item_ids)
        seen = seen_mask(histories, users, full)
        X3, cand, personal = self.rows(users, histories, full, seen)
        p = m._probability(X3)
        out = np.where(cand | seen, p, p - 1.0)
        if any(sc.model.personal for sc in self.scorers):
            out[~personal] = np.nan
        return out[:, cols]
