"""The interpretable engagement model: a binomial GLM (logistic regression) with an L2 or
elastic-net penalty, fitted by glum on point-in-time features.

Standard errors come from the curvature of the penalised log-likelihood at the fit (a Laplace
approximation; with alpha -> 0 they are the classical ones). Serving splits the logit by scope
(models/linear.py) so a whole catalogue is scored per user with array arithmetic."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Self

import numpy as np
import polars as pl
import scipy.sparse as sp
import tabmat
from glum import GeneralizedLinearRegressor
from scipy import stats

from feedrank.config import Settings
from feedrank.data.site import SiteData
from feedrank.exceptions import FeedrankError
from feedrank.features.encoder import Encoder
from feedrank.features.examples import build_examples
from feedrank.features.groups import FeatureGroups, FeatureSpec
from feedrank.features.history import History, T
from feedrank.models.base import Recommender
from feedrank.models.linear import CONTEXT_COLUMNS, LinearScorer


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -35, 35)))


def fit_logistic(
    X: sp.csr_matrix,
    y: np.ndarray,
    alpha: float,
    l1_ratio: float,
    sample_weight: np.ndarray | None = None,
) -> tuple[np.ndarray, float, np.ndarray]:
    """Penalised logistic regression by glum's IRLS; returns coef, intercept, standard errors
    (intercept first) from the penalised Hessian X'WX + n*alpha*(1-l1_ratio)*I."""
    model = GeneralizedLinearRegressor(
        family="binomial", alpha=alpha, l1_ratio=l1_ratio, fit_intercept=True
    )
    try:
        model.fit(X, y, sample_weight=sample_weight)
    except np.linalg.LinAlgError as exc:
        raise FeedrankError(
            f"the GLM's design matrix is singular with alpha={alpha} (one-hot columns always are "
            "without a penalty): use alpha > 0"
        ) from exc
    coef = np.asarray(model.coef_, dtype=np.float64)
    intercept = float(model.intercept_)
    p = sigmoid(X @ coef + intercept)
    w = p * (1 - p) * (sample_weight if sample_weight is not None else 1.0)
    # The Hessian of the log-likelihood with the intercept as a border: [[sum w, (X'w)'], [X'w, X'WX]];
    # tabmat's sandwich computes X'WX without materialising W.
    xtw = np.asarray(X.T @ w).ravel()
    H = np.empty((X.shape[1] + 1, X.shape[1] + 1))
    H[0, 0], H[0, 1:], H[1:, 0] = w.sum(), xtw, xtw
    H[1:, 1:] = tabmat.SparseMatrix(sp.csc_matrix(X)).sandwich(w)
    n = float(np.sum(sample_weight)) if sample_weight is not None else float(X.shape[0])
    penalty = n * alpha * (1.0 - l1_ratio) * np.ones(H.shape[0])
    penalty[0] = 0.0
    cov = np.linalg.pinv(H + np.diag(penalty))
    se = np.sqrt(np.clip(np.diag(cov), 0, None))
    return coef, intercept, se


class GLMRecommender(Recommender):
    """Logistic GLM over user, item, history, user x item-attribute and context features."""

    kind = "glm"

    def __init__(
        self, alpha: float = 1e-4, l1_ratio: float = 0.0, max_levels: int = 50, min_count: int = 5
    ) -> None:
        self.alpha = alpha
        self.l1_ratio = l1_ratio
        self.max_levels = max_levels
        self.min_count = min_count

    # -- fitting -----------------------------------------------------------------------------------
    def fit(
        self, data: SiteData, settings: Settings | None = None, examples: pl.DataFrame | None = None
    ) -> Self:
        if not 0.0 <= self.l1_ratio <= 1.0:
            raise ValueError(f"l1_ratio must be in [0, 1]; got {self.l1_ratio}")
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0; got {self.alpha}")
        self.settings_ = settings or Settings()
        self.spec_ = FeatureSpec.infer(data, self.settings_)
        groups = self._groups(data)
        ex = examples if examples is not None else build_examples(data, self.settings_)
        if ex.is_empty() or ex["label"].n_unique() < 2:
            raise ValueError(
                "training needs examples of both classes; got "
                f"{ex.height} examples with labels {sorted(ex['label'].unique().to_list())}"
            )
        raw = groups.rows(ex)
        categorical = [
            *self.spec_.user_categoricals,
            *self.spec_.item_categoricals,
            *CONTEXT_COLUMNS,
        ]
        numeric = [c for c in raw.columns if c not in categorical]
        self.encoder_ = Encoder(self.max_levels, self.min_count).fit(
            raw, categorical, numeric, self.spec_.crosses
        )
        X = self.encoder_.transform(raw)
        y = ex["label"].to_numpy().astype(np.float64)
        self.coef_, self.intercept_, self.se_ = fit_logistic(X, y, self.alpha, self.l1_ratio)
        self.n_examples_ = ex.height
        self.positive_rate_ = float(y.mean())
        return self.serve_with(data)

    def _groups(self, data: SiteData) -> FeatureGroups:
        return FeatureGroups(
            self.spec_, data, History(data, self.settings_, self.spec_.share_attributes)
        )

    # -- serving -----------------------------------------------------------------------------------
    def _prepare_serving(self) -> None:
        self.groups_ = self._groups(self.data_)
        self.scorer_ = LinearScorer(
            self.groups_, self.encoder_, self.coef_, self.intercept_, self.at_
        )

    def score(self, user_ids: Sequence[str], item_ids: Sequence[str] | np.ndarray) -> np.ndarray:
        self._check()
        return sigmoid(self.scorer_.logits(list(user_ids), np.asarray(item_ids, dtype=object)))

    def predict_rows(self, rows: pl.DataFrame) -> np.ndarray:
        """Probability for each row (user_id, item_id, timestamp[, position, device]) with features
        as of the row's own timestamp — training's path, for arbitrary pairs and times."""
        self._check()
        X = self.encoder_.transform(self.groups_.rows(rows))
        return sigmoid(np.asarray(X @ self.coef_).ravel() + self.intercept_)

    def explain(self, user_id: str, item_id: str, top: int = 5) -> list[dict[str, Any]]:
        """Largest contributions (coefficient x encoded value, summed per raw feature) to the
        logit of this pair at the serving time, with the raw value that produced each."""
        return self.explain_pairs([user_id], [item_id], top)[0]

    def explain_pairs(
        self, user_ids: Sequence[str], item_ids: Sequence[str], top: int = 5
    ) -> list[list[dict[str, Any]]]:
        """explain() of many pairs in one pass: one feature frame, one encoding."""
        self._check()
        n = len(user_ids)
        if n == 0:
            return []
        rows = pl.DataFrame(
            {
                "user_id": list(user_ids),
                "item_id": list(item_ids),
                T: [self.at_] * n,
                "position": [1] * n,
                "device": [None] * n,
            },
            schema={
                "user_id": pl.String,
                "item_id": pl.String,
                T: pl.Datetime("us", "UTC"),
                "position": pl.Int32,
                "device": pl.String,
            },
        )
        raw = self.groups_.rows(rows)
        weighted = self.encoder_.transform(raw).multiply(self.coef_).tocsc()
        slices = self.encoder_.column_slices()
        per_column = []  # (name, contribution per row, raw value per row)
        for col in self.encoder_.columns_:
            if col.name in CONTEXT_COLUMNS:
                continue
            contrib = np.asarray(weighted[:, slices[col.name]].sum(axis=1)).ravel()
            if contrib.any():
                per_column.append((col.name, contrib, col.raw(raw).to_list()))
        out = []
        for r in range(n):
            found = [
                {"feature": name, "value": values[r], "contribution": float(c[r])}
                for name, c, values in per_column
                if c[r] != 0.0
            ]
            found.sort(key=lambda d: -abs(d["contribution"]))
            out.append(found[:top])
        return out

    # -- interpretation ----------------------------------------------------------------------------
    def coef_table(self) -> pl.DataFrame:
        """Seed 001's table, with uncertainty: feature, coefficient, standard error, z, p-value,
        odds ratio; sorted by coefficient."""
        names = ["intercept", *self.encoder_.feature_names_]
        coef = np.concatenate([[self.intercept_], self.coef_])
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(self.se_ > 0, coef / self.se_, np.nan)
        p = 2 * stats.norm.sf(np.abs(z))
        return pl.DataFrame(
            {
                "feature": names,
                "coefficient": coef,
                "std_error": self.se_,
                "z": z,
                "p_value": p,
                "odds_ratio": np.exp(coef),
            }
        ).sort("coefficient", descending=True)

    # -- persistence -------------------------------------------------------------------------------
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {
            "params": {
                "alpha": self.alpha,
                "l1_ratio": self.l1_ratio,
                "max_levels": self.max_levels,
                "min_count": self.min_count,
            },
            "spec": self.spec_.to_json(),
            "encoder": self.encoder_.to_json(),
            "settings": self.settings_.to_dict(),
            "n_examples": self.n_examples_,
            "positive_rate": self.positive_rate_,
            "intercept": self.intercept_,
        }
        return meta, {"coef": self.coef_, "se": self.se_}

    @classmethod
    def _from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Self:
        model = cls(**meta["params"])
        model.spec_ = FeatureSpec.from_json(meta["spec"])
        model.encoder_ = Encoder.from_json(meta["encoder"])
        model.settings_ = Settings.from_dict(meta["settings"])
        model.coef_, model.se_ = arrays["coef"], arrays["se"]
        model.intercept_ = float(meta["intercept"])
        model.n_examples_ = int(meta["n_examples"])
        model.positive_rate_ = float(meta["positive_rate"])
        return model

    def serve_at(self, at: datetime) -> Self:
        return self.serve_with(self.data_, at)
