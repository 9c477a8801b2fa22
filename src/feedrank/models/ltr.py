"""A learned ranker over candidates: LightGBM's lambdarank where the hybrid has a GLM.

The candidate machinery is the hybrid's (models.hybrid): the union of each generator's top
`n_candidates`; per generator its normalised score and rank discount; training rows from an
inner hold-out (each user's latest engaged item hidden, the generators fitted without it), so
no label is ever seen by the generators whose scores are its features. Beyond them: the user's
activity (log of their engaged events: how much the collaborative scores can be trusted).
Latent user-item terms come in as a generator (`als`: factors fitted on the training window).
`folds` random inner hold-outs (holdout="random") give more rows; the members are not
selected (each subset would cost a boosting run): the booster weighs them.

Groups are users; a fifth of them (seeded) are kept for early stopping, and on those the
ranker's NDCG@10 among the candidates is recorded beside each generator's own (`validation_`),
so a ranker that does not beat its best generator says so. The booster is saved as LightGBM's
text model inside meta.json (no pickle); scores are the ranker's, squashed into (0, 1) so
non-candidates sit below every candidate. Explanations: the booster's per-feature
contributions (SHAP values) to the pair's score."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from feedrank.models.base import Recommender, seen_mask, sigmoid
from feedrank.models.hybrid import GeneratorSpec, HybridRecommender, HybridScorer
from feedrank.views.view import View

K_VALIDATION = 10


class LTRRecommender(HybridRecommender):
    kind = "ltr"

    def __init__(
        self,
        generators: Sequence[GeneratorSpec] = ("transition", "ease", "als", "popularity"),
        n_candidates: int = 50,
        n_estimators: int = 300,
        learning_rate: float = 0.05,
        num_leaves: int = 15,
        min_child_samples: int = 20,
        max_train_users: int = 5000,
        random_state: int = 0,
        holdout: str = "latest",
        folds: int = 1,
    ) -> None:
        self.generators = list(generators)
        self.n_candidates = n_candidates
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.max_train_users = max_train_users
        self.random_state = random_state
        self.holdout = holdout
        self.folds = folds

    def _learn(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray) -> None:
        import lightgbm as lgb  # fit only: serving reads the text model

        self.feature_names_ = [
            *(f"{n}_{f}" for n in self.names_ for f in ("score", "rank")),
            "user_activity",
        ]
        rng = np.random.default_rng(self.random_state)
        is_val = rng.random(len(groups)) < 0.2
        row_val = np.repeat(is_val, groups)
        params = {
            "objective": "lambdarank",
            "metric": "ndcg",
            "eval_at": [K_VALIDATION],
            "learning_rate": self.learning_rate,
            "num_leaves": int(self.num_leaves),
            "min_child_samples": int(self.min_child_samples),
            "num_threads": 1,  # bit for bit the same model from the same data
            "deterministic": True,
            "seed": int(self.random_state),
            "verbosity": -1,
        }
        train = lgb.Dataset(X[~row_val], y[~row_val], group=groups[~is_val])
        sets = [lgb.Dataset(X[row_val], y[row_val], group=groups[is_val], reference=train)]
        booster = lgb.train(
            params,
            train,
            num_boost_round=int(self.n_estimators),
            valid_sets=sets if is_val.any() else [],
            callbacks=[lgb.early_stopping(30, verbose=False)] if is_val.any() else [],
        )
        self.booster_ = booster.model_to_string(num_iteration=booster.best_iteration or None)
        self._parsed = lgb.Booster(model_str=self.booster_)
        self.best_iteration_ = int(booster.best_iteration or booster.current_iteration())
        self.validation_ = _validation(booster, X[row_val], y[row_val], groups[is_val], self.names_)

    def _probability(self, X3: np.ndarray) -> np.ndarray:
        n, m, f = X3.shape
        return sigmoid(np.asarray(self._parsed.predict(X3.reshape(n * m, f))).reshape(n, m))

    def at(self, view: View, generators: Sequence[Recommender] | None = None) -> LTRScorer:
        return LTRScorer(self, view, self.generators_ if generators is None else generators)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta, arrays = super(HybridRecommender, self)._state()
        meta.update(
            {
                **self._selection_meta(),
                "feature_names": self.feature_names_,
                "booster": self.booster_,
                "best_iteration": self.best_iteration_,
                "validation": self.validation_,
                "n_train_rows": self.n_train_rows_,
                "positive_rate": self.positive_rate_,
            }
        )
        return meta, arrays

    def _load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        super(HybridRecommender, self)._load_state(meta, arrays)
        self._load_selection(meta)
        self.feature_names_ = list(meta["feature_names"])
        self.booster_ = str(meta["booster"])
        import lightgbm as lgb

        self._parsed = lgb.Booster(model_str=self.booster_)  # the text model, parsed once
        self.best_iteration_ = int(meta["best_iteration"])
        self.validation_ = dict(meta["validation"])
        self.n_train_rows_ = int(meta["n_train_rows"])
        self.positive_rate_ = float(meta["positive_rate"])

    def summary(self) -> str:
        """One line: the ranker against its best generator on the early-stopping users."""
        v = self.validation_
        gens = {k: x for k, x in v.items() if k != "ltr" and k != "users"}
        if not gens:
            return "no early-stopping users: nothing to compare"
        best = max(gens, key=lambda g: gens[g])
        verdict = "beats" if v["ltr"] > gens[best] else "does NOT beat"
        return (
            f"on {v['users']} early-stopping users, NDCG@{K_VALIDATION} among candidates: ltr "
            f"{v['ltr']:.4f} {verdict} its best generator {best} {gens[best]:.4f}"
        )


class LTRScorer(HybridScorer):
    model: LTRRecommender

    def design(
        self, users: Sequence[str], histories: pl.DataFrame, items: np.ndarray, seen: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        X3, proposed, personal = super().design(users, histories, items, seen)
        engaged = histories.filter(self.settings.engaged_expr(self.view.types))
        counts = (
            pl.DataFrame({"user_id": list(users)}, schema={"user_id": pl.String})
            .join(
                engaged.group_by("user_id").len(), on="user_id", how="left", maintain_order="left"
            )["len"]
            .fill_null(0)
            .to_numpy()
        )
        activity = np.broadcast_to(np.log1p(counts)[:, None, None], (*X3.shape[:2], 1))
        return np.concatenate([X3, activity], axis=2), proposed, personal

    def explain_pairs(
        self, user_ids: Sequence[str], item_ids: Sequence[str], top: int = 5
    ) -> list[list[dict[str, Any]]]:
        """The booster's per-feature contributions to each pair's raw score."""
        users = list(dict.fromkeys(user_ids))
        hist = self.view.histories(users)
        full, cols = self._catalogue(np.asarray(item_ids, dtype=object))
        X3, _, _ = self.rows(users, hist, full, seen_mask(hist, users, full))
        row = {u: r for r, u in enumerate(users)}
        X = np.stack([X3[row[u], c] for u, c in zip(user_ids, cols, strict=True)])
        contrib = np.asarray(self.model._parsed.predict(X, pred_contrib=True))[:, :-1]  # no bias
        names = self.model.feature_names_
        out = []
        for x, c in zip(X, contrib, strict=True):
            order = [j for j in np.argsort(-np.abs(c), kind="stable") if c[j] != 0][:top]
            out.append(
                [
                    {"feature": names[j], "value": float(x[j]), "contribution": float(c[j])}
                    for j in order
                ]
            )
        return out


def _validation(
    booster: Any, X: np.ndarray, y: np.ndarray, groups: np.ndarray, names: list[str]
) -> dict[str, Any]:
    """NDCG@K among each user's candidates: the ranker's and each generator's (by its score)."""
    if not len(groups):
        return {"users": 0}
    starts = np.concatenate([[0], np.cumsum(groups)[:-1]])

    def ndcg(scores: np.ndarray) -> float:
        total = 0.0
        for s, n in zip(starts, groups, strict=True):
            g_y, g_s = y[s : s + n], scores[s : s + n]
            order = np.argsort(-g_s, kind="stable")[:K_VALIDATION]
            hit = np.flatnonzero(g_y[order] > 0)
            total += 1.0 / np.log2(hit[0] + 2) if hit.size else 0.0
        return total / len(groups)

    out: dict[str, Any] = {
        "users": len(groups),
        "ltr": round(float(ndcg(booster.predict(X))), 6),
    }
    for g, name in enumerate(names):
        out[name] = round(float(ndcg(X[:, 2 * g])), 6)
    return out
