"""Seed 003's Model 1: bilinear logistic regression with an identity prior.

    theta_ui = sigmoid(x_u' W y_i),   w_jk ~ Normal(1 if j == k else 0, sigma0^2)

fitted as the posterior mode (MAP) by SciPy's L-BFGS with the analytic gradient

    d(-log posterior)/dW = X' diag(p - c) Y + (W - M) / S^2,

vectorised: one (n x d) @ (d x d) product for the logits and one (d x n) @ (n x d) for the
gradient per evaluation. The negative log-likelihood is convex in W (z is linear in W) and the
prior is a strictly convex quadratic, so the mode is unique and every start reaches it.

The seed's model has no intercept; a click rate of a few per cent cannot come from x'Wy with
unit vectors, so by default (``bias=True``) x and y get a constant last coordinate: W's last
row/column become item/user biases and its corner the intercept, with prior mean 0 and a wide
sd (``bias_sigma``); the d x d block keeps the identity prior. With no data the fit is the prior
mean: the identity, and zero biases.

The seed's restriction |W y_i| = 1 (``normalize=True``): serving becomes the normalised dot
product s = x_u . v_i with v_i = W y_i / |W y_i| (the d x d block), which an ANN index serves
as is; probabilities are then sigmoid(a + b s), (a, b) fitted on the training examples after W.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import polars as pl
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from feedrank.exceptions import ConfigError
from feedrank.features.examples import build_examples
from feedrank.features.history import T
from feedrank.models.base import Recommender, Scorer, sigmoid
from feedrank.models.vectors import ItemEmbedder, at_time, lookup, user_vectors_asof
from feedrank.settings import Settings
from feedrank.views.site import SiteData
from feedrank.views.view import View


def bilinear_logits(X: np.ndarray, W: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """z_k = x_k' W y_k for every row k."""
    return np.einsum("nd,nd->n", X @ W.astype(X.dtype, copy=False), Y)


@dataclass(frozen=True)
class BilinearFit:
    W: np.ndarray
    objective: float  # -log posterior / n at the mode
    n_iter: int
    converged: bool


def fit_bilinear(
    X: np.ndarray,
    Y: np.ndarray,
    c: np.ndarray,
    prior_mean: np.ndarray | None = None,
    prior_sd: float | np.ndarray = 1.0,
    W0: np.ndarray | None = None,
    sample_weight: np.ndarray | None = None,
    offset: np.ndarray | None = None,
    max_iter: int = 500,
    tol: float = 1e-8,
    threads: int | None = 1,
) -> BilinearFit:
    """MAP of W in c ~ Bernoulli(sigmoid(offset + x' W y)), W ~ N(prior_mean, prior_sd^2)
    elementwise (prior_mean defaults to the identity). X and Y may be float32 (the products run
    in their dtype; the optimiser in float64). `threads` caps BLAS threads (None: the library's
    default): at a few thousand rows per product, thread hand-offs cost more than they save."""
    n, d = X.shape
    if Y.shape != (n, d) or c.shape != (n,):
        raise ConfigError(
            f"X, Y must be n x d and c of length n; got X {X.shape}, Y {Y.shape}, c {c.shape}"
        )
    M = np.eye(d) if prior_mean is None else np.asarray(prior_mean, dtype=np.float64)
    prec = 1.0 / np.broadcast_to(np.asarray(prior_sd, dtype=np.float64), (d, d)) ** 2
    w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    # the objective is divided by the data's weight: same mode, gradients of order one for L-BFGS
    scale = 1.0 / max(float(w.sum()), 1.0)
    cw = c.astype(np.float64) * w

    def f(theta: np.ndarray) -> tuple[float, np.ndarray]:
        W = theta.reshape(d, d)
        diff = W - M
        penalty = 0.5 * float(np.sum(prec * diff * diff))
        grad = prec * diff
        if n:
            z = bilinear_logits(X, W, Y).astype(np.float64)
            if offset is not None:
                z = z + offset
            nll = float(np.sum(w * np.logaddexp(0.0, z)) - cw @ z)
            r = (w * sigmoid(z) - cw).astype(X.dtype)
            grad = grad + (X.T @ (Y * r[:, None])).astype(np.float64)
        else:
            nll = 0.0
        return (nll + penalty) * scale, (grad * scale).ravel()

    start = (M if W0 is None else np.asarray(W0, dtype=np.float64)).ravel().copy()
    with threadpool_limits(limits=threads):
        res = minimize(
            f,
            start,
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": max_iter, "ftol": tol * 1e-2, "gtol": tol},
        )
    return BilinearFit(res.x.reshape(d, d), float(res.fun), int(res.nit), bool(res.success))


def augment(V: np.ndarray) -> np.ndarray:
    """[V, 1]: the constant coordinate that turns W's last row/column into biases."""
    return np.hstack([V, np.ones((V.shape[0], 1), dtype=V.dtype)])


def fit_calibration(s: np.ndarray, c: np.ndarray) -> tuple[float, float]:
    """(a, b) of c ~ Bernoulli(sigmoid(a + b s)): a two-parameter MAP with a flat-ish prior."""
    X = np.column_stack([np.ones_like(s), s])

    def f(t: np.ndarray) -> tuple[float, np.ndarray]:
        z = X @ t
        nll = float(np.sum(np.logaddexp(0.0, z)) - c @ z) + 1e-6 * float(t @ t)
        return nll / len(s), (X.T @ (sigmoid(z) - c) + 2e-6 * t) / len(s)

    t = minimize(f, np.zeros(2), jac=True, method="L-BFGS-B").x
    return float(t[0]), float(t[1])


class BilinearRecommender(Recommender):
    """theta_ui = sigmoid(x_u' W y_i) over item vectors (text / metadata / CF) and user vectors
    (weighted means of what each user engaged with before), W at its MAP under an identity prior."""

    kind = "bilinear"
    probabilistic = True

    def __init__(
        self,
        vectors: str = "auto",
        dim: int = 32,
        source_dim: int = 300,
        reduction: str = "pca",
        text_column: str = "title",
        sigma0: float = 1.0,
        bias: bool = True,
        bias_sigma: float = 10.0,
        normalize: bool = False,
        max_iter: int = 500,
        seed: int = 0,
    ) -> None:
        self.vectors = vectors
        self.dim = dim
        self.source_dim = source_dim
        self.reduction = reduction
        self.text_column = text_column
        self.sigma0 = sigma0
        self.bias = bias
        self.bias_sigma = bias_sigma
        self.normalize = normalize
        self.max_iter = max_iter
        self.seed = seed

    # -- vectors -----------------------------------------------------------------------------------
    def _embedder(self) -> ItemEmbedder:
        return ItemEmbedder(
            source=self.vectors,
            dim=self.dim,
            source_dim=self.source_dim,
            reduction=self.reduction,
            text_column=self.text_column,
            seed=self.seed,
        )

    def item_table(self, items: pl.DataFrame) -> tuple[list[str], np.ndarray]:
        """Ids and item vectors y_i of these items (the embedder's)."""
        return items["item_id"].to_list(), self.embedder_.transform(items)

    def example_vectors(
        self, data: SiteData, rows: pl.DataFrame, item_ids: list[str], Y_items: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """User vectors as of each row's time and the rows' item vectors (zeros when unknown)."""
        X = user_vectors_asof(rows.select("user_id", T), data, self.settings_, item_ids, Y_items)
        return X, lookup(rows["item_id"].to_list(), item_ids, Y_items)

    # -- fitting -----------------------------------------------------------------------------------
    def fit(
        self, data: SiteData, settings: Settings | None = None, examples: pl.DataFrame | None = None
    ) -> Self:
        if self.sigma0 <= 0 or self.bias_sigma <= 0:
            raise ConfigError(
                f"sigma0 and bias_sigma must be > 0; got {self.sigma0}, {self.bias_sigma}"
            )
        settings = self._fitted_on(data, settings)
        self.embedder_ = self._embedder().fit(data, settings)
        ex = examples if examples is not None else build_examples(data, settings)
        if ex.is_empty() or ex["label"].n_unique() < 2:
            raise ConfigError(
                "training needs examples of both classes; got "
                f"{ex.height} examples with labels {sorted(ex['label'].unique().to_list())}"
            )
        item_ids, Y_items = self.item_table(data.items)
        X, Y = self.example_vectors(data, ex, item_ids, Y_items)
        c = ex["label"].to_numpy().astype(np.float64)
        d = X.shape[1]
        M, S = np.eye(d), np.full((d, d), self.sigma0)
        if self.bias:
            X, Y = augment(X), augment(Y)
            M = np.zeros((d + 1, d + 1))
            M[:d, :d] = np.eye(d)
            S = np.full((d + 1, d + 1), self.bias_sigma)
            S[:d, :d] = self.sigma0
        result = fit_bilinear(X, Y, c, M, S, max_iter=self.max_iter)
        self.W_, self.converged_, self.n_iter_ = result.W, result.converged, result.n_iter
        self.calibration_ = (0.0, 1.0)
        if self.normalize:
            self.calibration_ = fit_calibration(
                np.einsum("nd,nd->n", X[:, :d], self.normalised(Y[:, :d])), c
            )
        self.n_examples_ = ex.height
        self.positive_rate_ = float(c.mean())
        return self

    def normalised(self, Y: np.ndarray) -> np.ndarray:
        """v_i = W y_i / |W y_i| over the d x d block: the production item vectors."""
        d = self.embedder_.out_dim
        V = Y @ self.W_[:d, :d].T
        norm = np.linalg.norm(V, axis=1, keepdims=True)
        return np.divide(V, norm, out=np.zeros_like(V), where=norm > 0)

    def index_vectors(self, Y: np.ndarray) -> np.ndarray:
        """What a vector index stores per item: W y_i (normalised with normalize=True)."""
        d = Y.shape[1]
        return self.normalised(Y) if self.normalize else Y @ self.W_[:d, :d].T

    def logits(self, X: np.ndarray, Y: np.ndarray, pairwise: bool) -> np.ndarray:
        if self.normalize:
            a, b = self.calibration_
            V = self.normalised(Y)
            s = X @ V.T if pairwise else np.einsum("nd,nd->n", X, V)
            return a + b * s
        if self.bias:
            X, Y = augment(X), augment(Y)
        return (X @ self.W_) @ Y.T if pairwise else bilinear_logits(X, self.W_, Y)

    # -- serving -----------------------------------------------------------------------------------
    def at(self, view: View) -> BilinearScorer:
        return BilinearScorer(self, view)

    def predict_proba(self, data: SiteData, rows: pl.DataFrame) -> np.ndarray:
        """Probability per row (user_id, item_id, timestamp[, position, device]), the user vector
        read as of the row's own time — training's path, for arbitrary pairs and times."""
        self._check()
        item_ids, Y_items = self.item_table(data.items)
        X, Y = self.example_vectors(data, rows, item_ids, Y_items)
        return sigmoid(self.logits(X, Y, pairwise=False))

    def explain_vectors(self, x: np.ndarray, y: np.ndarray, top: int = 5) -> list[dict[str, Any]]:
        """The logit split into the dot-product part x.y (the prior's model), what the learned W
        adds to it, and the bias terms; value is the quantity each contribution comes from."""
        d = len(x)
        parts: list[dict[str, Any]]
        if self.normalize:
            a, b = self.calibration_
            s = float(x @ self.normalised(y[None, :])[0])
            parts = [
                {"feature": "normalised dot product x.v", "value": s, "contribution": b * s},
                {"feature": "intercept", "value": 1.0, "contribution": a},
            ]
        else:
            W = self.W_
            dot = float(x @ y)
            learned = float(x @ (W[:d, :d] - np.eye(d)) @ y)
            parts = [
                {"feature": "dot product x.y", "value": dot, "contribution": dot},
                {
                    "feature": "learned interaction x'(W-I)y",
                    "value": learned,
                    "contribution": learned,
                },
            ]
            if self.bias:
                parts += [
                    {"feature": "user bias", "value": 1.0, "contribution": float(x @ W[:d, d])},
                    {"feature": "item bias", "value": 1.0, "contribution": float(W[d, :d] @ y)},
                    {"feature": "intercept", "value": 1.0, "contribution": float(W[d, d])},
                ]
        parts.sort(key=lambda p: -abs(float(p["contribution"])))
        return parts[:top]

    # -- persistence -------------------------------------------------------------------------------
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        emb_meta, emb_arrays = self.embedder_.to_state()
        meta = {
            "embedder": emb_meta,
            "calibration": list(self.calibration_),
            "n_examples": self.n_examples_,
            "positive_rate": self.positive_rate_,
            "converged": self.converged_,
            "n_iter": self.n_iter_,
        }
        return meta, {"W": self.W_, **emb_arrays}

    def _load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.embedder_ = ItemEmbedder.from_state(meta["embedder"], arrays)
        self.W_ = arrays["W"]
        a, b = meta["calibration"]
        self.calibration_ = (float(a), float(b))
        self.n_examples_ = int(meta["n_examples"])
        self.positive_rate_ = float(meta["positive_rate"])
        self.converged_, self.n_iter_ = bool(meta["converged"]), int(meta["n_iter"])


class BilinearScorer(Scorer):
    """Item vectors once per catalogue; user vectors from the users' histories as of the view."""

    model: BilinearRecommender

    def items(self) -> tuple[list[str], np.ndarray]:
        return self.view.catalogue.memo(
            ("bilinear-items", self.model.fit_id_),
            lambda: self.model.item_table(self.view.catalogue.items),
        )

    def prepare(self) -> BilinearScorer:
        self.items()
        return self

    def user_vectors(self, user_ids: Sequence[str], histories: pl.DataFrame) -> np.ndarray:
        item_ids, Y_items = self.items()
        data = SiteData(self.view.profiles(user_ids), self.view.catalogue.items, histories)
        return user_vectors_asof(
            at_time(list(user_ids), self.view.at), data, self.settings, item_ids, Y_items
        )

    def score_users(
        self, user_ids: Sequence[str], histories: pl.DataFrame, item_ids: np.ndarray
    ) -> np.ndarray:
        X = self.user_vectors(user_ids, histories)
        ids, Y_items = self.items()
        Y = lookup(list(item_ids), ids, Y_items)
        p = sigmoid(self.model.logits(X, Y, pairwise=True))
        # A user with no engagement yet has a zero vector: their scores would be the item terms
        # alone, popularity by another name, so no signal (the service's fallbacks say so).
        p[~X.any(axis=1)] = np.nan
        return p

    def explain_pairs(
        self, user_ids: Sequence[str], item_ids: Sequence[str], top: int = 5
    ) -> list[list[dict[str, Any]]]:
        users = list(dict.fromkeys(user_ids))
        X = self.user_vectors(users, self.view.histories(users))
        row = {u: i for i, u in enumerate(users)}
        ids, Y_items = self.items()
        Y = lookup(list(item_ids), ids, Y_items)
        return [self.model.explain_vectors(X[row[u]], Y[j], top) for j, u in enumerate(user_ids)]
