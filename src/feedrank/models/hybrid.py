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
  random with holdout="random" (for data whose time carries no signal; `folds` such hold-outs,
  each with its own seed, give more rows) — the generators are fitted on the rest, and the
  training rows are the candidates of those users labelled by whether they are the held-out
  item. So a label is never seen by the generators whose scores are its features. With
  select="forward" (the default) the members are chosen on those rows first
  (models.selection: a quarter of the held-out users judge each subset of generators, forward
  selection by NDCG@10), so a generator that adds nothing on validation is left out
  (`selection_` shows every subset tried). The chosen generators are refitted on all the data
  for serving.
  Any model can be a member: the default pool adds `transition` to the collaborative, content
  and popularity ones; `ltr` and `sasrec` (the neural extra) are members when named (each
  costs its own fit twice: on the inner hold-out and on all the data).
- `BlendRecommender` ("blend"): a fixed weighted sum of the generators' normalised scores
  (per-user min-max, or the rank discount).

Both rank non-candidates below candidates (hybrid) and score every catalogue item, so batch
and per-user results agree."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Self

import numpy as np
import polars as pl
import scipy.sparse as sp
from scipy import stats

from feedrank.exceptions import ConfigError
from feedrank.models.base import Recommender, has_events, seen_mask
from feedrank.models.ensemble import (
    GeneratorSpec,
    _Ensemble,
    _EnsembleScorer,
    minmax_rows,
    rank_rows,
    resolve,
)
from feedrank.models.glm import fit_logistic, sigmoid
from feedrank.models.selection import forward_select, subset_rows
from feedrank.settings import Settings
from feedrank.views.site import SiteData
from feedrank.views.view import FrameView, View

__all__ = [
    "BlendRecommender",
    "GeneratorSpec",
    "HybridRecommender",
    "minmax_rows",
    "rank_rows",
    "resolve",
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
            "transition",
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
        select: str = "forward",
        folds: int = 1,
    ) -> None:
        self.generators = list(generators)
        self.n_candidates = n_candidates
        self.alpha = alpha
        self.max_train_users = max_train_users
        self.random_state = random_state
        self.holdout = holdout
        self.select = select
        self.folds = folds

    # -- fitting -----------------------------------------------------------------------------------
    def _holdout(self, data: SiteData, fold: int = 0) -> tuple[SiteData, pl.DataFrame]:
        """One engaged item per user with >= 2: the latest ("latest"; ties at random, seeded)
        or one at random ("random", seeded by random_state + fold)."""
        last = (
            data.engagements(self.settings_)
            .group_by("user_id", "item_id")
            .agg(pl.col("timestamp").max())
            .sort("user_id", "item_id")
        )
        rng = np.random.default_rng(self.random_state + fold)
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
        select, folds = getattr(self, "select", "none"), int(getattr(self, "folds", 1))
        if select not in ("forward", "none"):
            raise ConfigError(f"select must be one of ['forward', 'none']; got '{select}'")
        if folds < 1 or (folds > 1 and self.holdout != "random"):
            raise ConfigError(
                "folds must be 1, or more with holdout='random' (each fold hides another random "
                f"item); got {folds} with holdout='{self.holdout}'"
            )
        pool = [resolve(s)[0] for s in self.generators]
        if len(set(pool)) != len(pool):
            raise ConfigError(f"generator names must be distinct (give 'name'); got {pool}")
        self.names_ = pool
        X, y, groups, proposed = self._folds_rows(data, folds)
        self.chosen_ = list(range(len(pool)))
        self.selection_ = pl.DataFrame()
        if select == "forward" and len(pool) > 1:
            group = np.repeat(np.arange(len(groups)), groups)
            self.chosen_, self.selection_ = forward_select(
                X, y, group, proposed, pool, self._learner, seed=self.random_state
            )
        keep, cols = subset_rows(X, proposed, self.chosen_, 2)
        groups = np.add.reduceat(keep, np.concatenate([[0], np.cumsum(groups)[:-1]]))
        X, y, groups = X[np.ix_(keep, cols)], y[keep], groups[groups > 0]
        self.names_ = [pool[g] for g in self.chosen_]
        self._learn(X, y, groups)
        self.n_train_rows_, self.positive_rate_ = len(y), float(y.mean())
        self.generators_ = self._fit_generators(data, self.chosen_)
        return self

    def _folds_rows(
        self, data: SiteData, folds: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every fold's candidate rows stacked (see _candidate_rows); users of different folds
        are different groups."""
        parts = []
        for fold in range(folds):
            inner, held = self._holdout(data, fold)
            if held.is_empty():
                raise ConfigError(
                    f"the {self.kind} model needs users with >= 2 engaged items to learn its blend"
                )
            parts.append(self._candidate_rows(inner, held))
        X, y, groups, proposed = (np.concatenate(p) for p in zip(*parts, strict=True))
        if y.sum() == 0 or y.sum() == len(y):
            raise ConfigError(
                f"no held-out item is among the {self.n_candidates} candidates of any user: "
                "raise n_candidates"
            )
        return X, y, groups, proposed

    def _learner(self, X: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """What forward selection fits per subset: the GLM over standardised features."""
        mean, sd = X.mean(axis=0), X.std(axis=0)
        scale = np.where(sd > 0, sd, 1.0)
        Z = np.where(sd > 0, (X - mean) / scale, 0.0)
        coef, intercept, _ = fit_logistic(sp.csr_matrix(Z), y, self.alpha, 0.0)
        return lambda X2: np.asarray(((X2 - mean) / scale) @ coef + intercept)

    def _candidate_rows(
        self, inner: SiteData, held: pl.DataFrame
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Features of the held-out users' candidates (rows grouped by user, in order), whether
        each is the held-out item, the candidates per user, and which generators proposed each
        row; the generators fitted on `inner`, which lacks the held-out items."""
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
        xs, ys, groups, props = [], [], [], []
        cells = max(1, len(items) * 2 * len(self.generators))
        step = min(len(users), max(1, 4_000_000 // cells))
        for s in range(0, len(users), step):
            block = users[s : s + step]
            hist = view.histories(block)
            seen = seen_mask(hist, block, items)
            X3, P3, _ = scorer.design(block, hist, items, seen)
            cand = P3.any(axis=2)
            y2 = np.zeros(seen.shape, dtype=bool)
            hc = held_col[s : s + step]
            y2[np.flatnonzero(hc >= 0), hc[hc >= 0]] = True
            xs.append(X3[cand])
            ys.append(y2[cand])
            groups.append(cand.sum(axis=1))
            props.append(P3[cand])
        return (
            np.concatenate(xs),
            np.concatenate(ys).astype(np.float64),
            np.concatenate(groups),
            np.concatenate(props),
        )

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

    def _selection_meta(self) -> dict[str, Any]:
        return {"chosen": self.chosen_, "selection": self.selection_.to_dicts()}

    def _load_selection(self, meta: dict[str, Any]) -> None:
        self.chosen_ = [int(g) for g in meta.get("chosen", range(len(self.names_)))]
        self.selection_ = pl.DataFrame(meta.get("selection", []))

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta, arrays = super()._state()
        meta.update(
            {
                **self._selection_meta(),
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
        self._load_selection(meta)
        self.feature_names_ = list(meta["feature_names"])
        self.intercept_ = float(meta["intercept"])
        self.n_train_rows_ = int(meta["n_train_rows"])
        self.positive_rate_ = float(meta["positive_rate"])
        self.coef_, self.se_ = arrays["coef"], arrays["se"]
        self.mean_, self.scale_ = arrays["mean"], arrays["scale"]


class HybridScorer(_EnsembleScorer):
    model: HybridRecommender

    def design(
        self, users: Sequence[str], histories: pl.DataFrame, items: np.ndarray, seen: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Feature tensor (users x items x features), which generator proposes each unseen
        item (users x items x generators), and whether each user has a personal signal."""
        norm, ranks, personal = self.features(users, histories, items, seen)
        proposed = np.stack(
            [  # a generator constant over a user's items proposes none of them
                (r <= self.model.n_candidates) & (n.max(axis=1, keepdims=True) > 0) & ~seen
                for n, r in zip(norm, ranks, strict=True)
            ],
            axis=2,
        )
        feats = []
        for n, r in zip(norm, ranks, strict=True):
            feats += [n, 1.0 / np.log2(1.0 + r)]
        return np.stack(feats, axis=2), proposed, personal

    def rows(
        self, users: Sequence[str], histories: pl.DataFrame, items: np.ndarray, seen: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Feature tensor, the candidate mask (the union of the generators' proposals), and
        whether each user has a personal signal."""
        X3, proposed, personal = self.design(users, histories, items, seen)
        return X3, np.asarray(proposed.any(axis=2)), personal

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
        if not any(sc.model.personal for sc in self.scorers):  # members chosen: none personal
            engaged = histories.filter(self.settings.engaged_expr(self.view.types))
            personal = has_events(users, engaged)
        out[~personal] = np.nan
        return out[:, cols]
