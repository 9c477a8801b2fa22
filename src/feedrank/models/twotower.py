"""Seed 003's Model 2, finished: a two-tower click model with context terms and position
debiasing. Trained with PyTorch on the CPU (extra ``feedrank[neural]``); served with NumPy, so a
saved model loads, predicts, recommends and explains without torch.

The model
---------
x_u, y_i in R^d_in are the user and item vectors of models/vectors.py. Then

    h_u = W_u x / |W_u x|,  h_i = W_i y / |W_i y|             (W_u, W_i: d_out x d_in)
    h_p = W_p[position], h_h = W_h[hour], h_w = W_w[weekday], h_d = W_d[device]
    H1  = [h_u . h_i, h_p, h_h, h_w, h_d]
    H2  = W1 H1 + b                                            (W1: 2 x 5, b: 2)
    theta_ui = softmax(H2)[0] = sigmoid((W1[0] - W1[1]) . H1 + b[0] - b[1])

Unit norm, not the seed formula's square root: the seed divides by sqrt(|W x|), which leaves
|h| = sqrt(|W x|) — the dot product's scale then still grows with how far a user or item vector
reaches, which is what the prose wanted removed. With |h_u| = |h_i| = 1 the dot product is a
cosine in [-1, 1], serving is a normalised dot product (any ANN index serves it), and the
strength of the match is carried by one number, W1[0, 0] - W1[1, 0]. A zero x (a user with no
history) gives h_u = 0 and a dot product of 0.

Each context term is a scalar read from a one-hot: hour of day (24), position (48; positions
above 48 share the last), weekday (7), device (3: the three most frequent device names in
training; any other or none reads 0). b is an addition to the seed: it carries the base rate, so
every context table can keep a prior centred at 0.

Priors (the seed's missing section), as Gaussian penalties added to the summed negative
log-likelihood, i.e. the fit is the posterior mode:

    W_u, W_i ~ N(I, sigma_tower^2)   elementwise, I the d_out x d_in identity: like Model 1's
                                     identity prior, the prior model scores cos(x_u, y_i).
                                     Default sigma_tower 0.1: at 1.0 the towers overfit (on the
                                     demo's held-out week: log loss 0.21 vs 0.18, AUC 0.60 vs 0.64)
    W_p, W_h, W_w, W_d ~ N(0, sigma_context^2)   no context effect unless the data show one
    W1 ~ N(0, sigma_head^2), b ~ N(0, sigma_bias^2)

Only W1[0] - W1[1] enters the likelihood, and each context column's scale trades with its table
(c * W_p is what counts); the priors pin both down (the penalised mode splits a product evenly
and sets W1[1] = -W1[0]), so the fit is well defined. The likelihood is not concave in the
towers, so training starts near the prior mean (towers at the identity plus seeded noise of
0.01, W1 at +-0.5: at W1 = 0 no gradient reaches the tables) and runs full-batch L-BFGS.

Position debiasing: at serving time the position term is held at `reference_position` (1), so
an item gains nothing from where it used to be shown. The learned position effect of p is
(W1[0,1] - W1[1,1]) * (W_p[p] - W_p[reference]). `use_position=False` drops the term: the same
model without position, for comparison.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self

import numpy as np
import polars as pl

from feedrank.exceptions import ConfigError, MissingExtraError
from feedrank.features.examples import build_examples
from feedrank.features.history import T
from feedrank.models.base import Recommender, Scorer
from feedrank.models.bilinear import sigmoid
from feedrank.models.vectors import ItemEmbedder, at_time, lookup, user_vectors_asof
from feedrank.settings import Settings
from feedrank.views.site import SiteData
from feedrank.views.view import View

N_HOURS, N_POSITIONS, N_WEEKDAYS, N_DEVICES = 24, 48, 7, 3
CONTEXT_TERMS = ("position", "hour", "weekday", "device")
PARAMS = ("W_u", "W_i", "W_p", "W_h", "W_w", "W_d", "W1", "b")


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise MissingExtraError(
            "the twotower model trains with PyTorch: pip install 'feedrank[neural]'"
        ) from exc
    return torch


@dataclass(frozen=True)
class Context:
    """Integer codes per row: hour 0-23, position 0-47, weekday 0-6, device 0-2 or -1 (none)."""

    hour: np.ndarray
    position: np.ndarray
    weekday: np.ndarray
    device: np.ndarray


def encode_context(rows: pl.DataFrame, devices: Sequence[str], reference_position: int) -> Context:
    """Codes from timestamp, position (null -> the reference) and device columns."""
    n = rows.height
    pos = (
        rows["position"].cast(pl.Int64).fill_null(reference_position).to_numpy()
        if "position" in rows.columns
        else np.full(n, reference_position)
    )
    dev = (
        rows["device"]
        .cast(pl.String)
        .replace_strict(list(devices), list(range(len(devices))), default=-1, return_dtype=pl.Int64)
        .to_numpy()
        if "device" in rows.columns and devices
        else np.full(n, -1)
    )
    return Context(
        hour=rows[T].dt.hour().cast(pl.Int64).to_numpy(),
        position=np.clip(pos, 1, N_POSITIONS) - 1,
        weekday=rows[T].dt.weekday().cast(pl.Int64).to_numpy() - 1,
        device=dev.astype(np.int64),
    )


def unit_rows(V: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(V, axis=-1, keepdims=True)
    return np.divide(V, norm, out=np.zeros_like(V), where=norm > 1e-12)


def context_terms(P: dict[str, np.ndarray], ctx: Context, use_position: bool) -> np.ndarray:
    """(n, 4): h_p, h_h, h_w, h_d per row."""
    hp = P["W_p"][ctx.position] if use_position else np.zeros(len(ctx.position))
    hd = np.where(ctx.device >= 0, P["W_d"][np.maximum(ctx.device, 0)], 0.0)
    return np.column_stack([hp, P["W_h"][ctx.hour], P["W_w"][ctx.weekday], hd])


def head(P: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
    """The click logit is H1 . coef + intercept (softmax of two = sigmoid of the difference)."""
    return P["W1"][0] - P["W1"][1], float(P["b"][0] - P["b"][1])


def fit_twotower(
    X: np.ndarray,
    Y: np.ndarray,
    ctx: Context,
    c: np.ndarray,
    d_out: int,
    use_position: bool = True,
    sigma_tower: float = 0.1,
    sigma_context: float = 1.0,
    sigma_head: float = 3.0,
    sigma_bias: float = 10.0,
    max_iter: int = 300,
    seed: int = 0,
    threads: int = 1,
) -> dict[str, np.ndarray]:
    """The posterior mode of every parameter (see the module docstring), as NumPy arrays.
    `threads` caps torch's intra-op threads while fitting (full-batch products of a few
    thousand rows run faster on one thread than on contended several)."""
    torch = _torch()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _fit(
            torch,
            X,
            Y,
            ctx,
            c,
            d_out,
            use_position,
            sigma_tower,
            sigma_context,
            sigma_head,
            sigma_bias,
            max_iter,
            seed,
        )
    finally:
        torch.set_num_threads(previous)


def _fit(
    torch: Any,
    X: np.ndarray,
    Y: np.ndarray,
    ctx: Context,
    c: np.ndarray,
    d_out: int,
    use_position: bool,
    sigma_tower: float,
    sigma_context: float,
    sigma_head: float,
    sigma_bias: float,
    max_iter: int,
    seed: int,
) -> dict[str, np.ndarray]:
    torch.manual_seed(seed)
    d_in = X.shape[1]
    f64 = torch.float64
    eye = torch.eye(d_out, d_in, dtype=f64)
    rate = float(np.clip(c.mean(), 1e-4, 1 - 1e-4))
    base = np.log(rate / (1 - rate)) / 2
    p = {
        "W_u": eye.clone() + 0.01 * torch.randn(d_out, d_in, dtype=f64),
        "W_i": eye.clone() + 0.01 * torch.randn(d_out, d_in, dtype=f64),
        "W_p": torch.zeros(N_POSITIONS, dtype=f64),
        "W_h": torch.zeros(N_HOURS, dtype=f64),
        "W_w": torch.zeros(N_WEEKDAYS, dtype=f64),
        "W_d": torch.zeros(N_DEVICES, dtype=f64),
        # a saddle at W1 = 0 (no gradient reaches the tables): start at +-0.5
        "W1": torch.tensor([[0.5] * 5, [-0.5] * 5], dtype=f64),
        "b": torch.tensor([base, -base], dtype=f64),
    }
    for t in p.values():
        t.requires_grad_(True)
    prior = {
        "W_u": (eye, sigma_tower),
        "W_i": (eye, sigma_tower),
        "W_p": (0.0, sigma_context),
        "W_h": (0.0, sigma_context),
        "W_w": (0.0, sigma_context),
        "W_d": (0.0, sigma_context),
        "W1": (0.0, sigma_head),
        "b": (0.0, sigma_bias),
    }
    xt, yt = torch.from_numpy(X.astype(np.float64)), torch.from_numpy(Y.astype(np.float64))
    hour, pos = torch.as_tensor(ctx.hour.copy()), torch.as_tensor(ctx.position.copy())
    wday, dev = torch.as_tensor(ctx.weekday.copy()), torch.as_tensor(ctx.device.copy())
    has_dev = (dev >= 0).to(f64)
    target = torch.from_numpy(1 - c.astype(np.int64))  # class 0 is "click", as in the seed
    n = max(len(c), 1)

    def objective() -> Any:
        hu = torch.nn.functional.normalize(xt @ p["W_u"].T, dim=1, eps=1e-12)
        hi = torch.nn.functional.normalize(yt @ p["W_i"].T, dim=1, eps=1e-12)
        hp = p["W_p"][pos] if use_position else torch.zeros(len(c), dtype=f64)
        H1 = torch.stack(
            [
                (hu * hi).sum(1),
                hp,
                p["W_h"][hour],
                p["W_w"][wday],
                p["W_d"][dev.clamp(min=0)] * has_dev,
            ],
            dim=1,
        )
        H2 = H1 @ p["W1"].T + p["b"]
        nll = torch.nn.functional.cross_entropy(H2, target, reduction="sum")
        penalty = sum(((p[k] - mean) ** 2).sum() / (2 * sd**2) for k, (mean, sd) in prior.items())
        return (nll + penalty) / n

    opt = torch.optim.LBFGS(
        list(p.values()),
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-7,
        tolerance_change=1e-10,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Any:
        opt.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    opt.step(closure)
    return {k: v.detach().numpy().copy() for k, v in p.items()}


class TwoTowerRecommender(Recommender):
    """Two unit-norm towers, context terms and a 2 x 5 head (see the module docstring)."""

    kind = "twotower"
    probabilistic = True

    def __init__(
        self,
        vectors: str = "auto",
        dim: int = 32,
        d_out: int | None = None,
        source_dim: int = 300,
        reduction: str = "pca",
        text_column: str = "title",
        use_position: bool = True,
        reference_position: int = 1,
        sigma_tower: float = 0.1,
        sigma_context: float = 1.0,
        sigma_head: float = 3.0,
        sigma_bias: float = 10.0,
        max_iter: int = 300,
        seed: int = 0,
    ) -> None:
        self.vectors = vectors
        self.dim = dim
        self.d_out = d_out
        self.source_dim = source_dim
        self.reduction = reduction
        self.text_column = text_column
        self.use_position = use_position
        self.reference_position = reference_position
        self.sigma_tower = sigma_tower
        self.sigma_context = sigma_context
        self.sigma_head = sigma_head
        self.sigma_bias = sigma_bias
        self.max_iter = max_iter
        self.seed = seed

    # -- fitting -----------------------------------------------------------------------------------
    def fit(
        self, data: SiteData, settings: Settings | None = None, examples: pl.DataFrame | None = None
    ) -> Self:
        if not 1 <= self.reference_position <= N_POSITIONS:
            raise ConfigError(
                f"reference_position must be in [1, {N_POSITIONS}]; got {self.reference_position}"
            )
        if min(self.sigma_tower, self.sigma_context, self.sigma_head, self.sigma_bias) <= 0:
            raise ConfigError("every sigma_* prior scale must be > 0")
        _torch()  # fail before the feature work when the extra is missing
        settings = self._fitted_on(data, settings)
        self.embedder_ = ItemEmbedder(
            source=self.vectors,
            dim=self.dim,
            source_dim=self.source_dim,
            reduction=self.reduction,
            text_column=self.text_column,
            seed=self.seed,
        ).fit(data, settings)
        ex = examples if examples is not None else build_examples(data, settings)
        if ex.is_empty() or ex["label"].n_unique() < 2:
            raise ConfigError(
                "training needs examples of both classes; got "
                f"{ex.height} examples with labels {sorted(ex['label'].unique().to_list())}"
            )
        self.devices_ = (
            ex["device"].drop_nulls().value_counts(sort=True)["device"].head(N_DEVICES).to_list()
        )
        item_ids = data.items["item_id"].to_list()
        Y_items = self.embedder_.transform(data.items)
        X = user_vectors_asof(ex.select("user_id", T), data, settings, item_ids, Y_items)
        Y = lookup(ex["item_id"].to_list(), item_ids, Y_items)
        c = ex["label"].to_numpy().astype(np.float64)
        ctx = encode_context(ex, self.devices_, self.reference_position)
        self.params_ = fit_twotower(
            X,
            Y,
            ctx,
            c,
            self.d_out or self.embedder_.out_dim,
            self.use_position,
            self.sigma_tower,
            self.sigma_context,
            self.sigma_head,
            self.sigma_bias,
            self.max_iter,
            self.seed,
        )
        self.n_examples_ = ex.height
        self.positive_rate_ = float(c.mean())
        return self

    # -- interpretation ----------------------------------------------------------------------------
    def position_effects(self) -> dict[int, float]:
        """Learned logit effect of each position relative to the reference position."""
        coef, _ = head(self.params_)
        wp = self.params_["W_p"]
        ref = wp[self.reference_position - 1]
        return {p + 1: float(coef[1] * (wp[p] - ref)) for p in range(N_POSITIONS)}

    # -- serving -----------------------------------------------------------------------------------
    def at(self, view: View) -> TwoTowerScorer:
        return TwoTowerScorer(self, view)

    def serving_context(self, n: int, at: datetime) -> Context:
        """The serving context: the serving time's hour and weekday, the reference position,
        no device (a device term reads 0)."""
        rows = pl.DataFrame(
            {T: [at] * n, "position": [self.reference_position] * n},
            schema={T: pl.Datetime("us", "UTC"), "position": pl.Int32},
        )
        return encode_context(rows, [], self.reference_position)

    def predict_proba(self, data: SiteData, rows: pl.DataFrame, debias: bool = False) -> np.ndarray:
        """Probability per row (user_id, item_id, timestamp[, position, device]) with the user
        vector as of the row's time and the row's own context — the click probability where it
        was shown. debias=True holds the position at the reference, as serving does."""
        self._check()
        item_ids = data.items["item_id"].to_list()
        Y_items = self.embedder_.transform(data.items)
        X = user_vectors_asof(rows.select("user_id", T), data, self.settings_, item_ids, Y_items)
        Hu = unit_rows(X @ self.params_["W_u"].T)
        Hi = unit_rows(lookup(rows["item_id"].to_list(), item_ids, Y_items) @ self.params_["W_i"].T)
        ctx_rows = rows.with_columns(position=pl.lit(self.reference_position)) if debias else rows
        ctx = context_terms(
            self.params_,
            encode_context(ctx_rows, self.devices_, self.reference_position),
            self.use_position,
        )
        coef, intercept = head(self.params_)
        return sigmoid(coef[0] * np.einsum("nd,nd->n", Hu, Hi) + ctx @ coef[1:] + intercept)

    # -- persistence -------------------------------------------------------------------------------
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        emb_meta, emb_arrays = self.embedder_.to_state()
        meta = {
            "embedder": emb_meta,
            "devices": self.devices_,
            "n_examples": self.n_examples_,
            "positive_rate": self.positive_rate_,
        }
        return meta, {**{f"tt_{k}": v for k, v in self.params_.items()}, **emb_arrays}

    def _load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.embedder_ = ItemEmbedder.from_state(meta["embedder"], arrays)
        self.params_ = {k: arrays[f"tt_{k}"] for k in PARAMS}
        self.devices_ = list(meta["devices"])
        self.n_examples_ = int(meta["n_examples"])
        self.positive_rate_ = float(meta["positive_rate"])


class TwoTowerScorer(Scorer):
    """Item towers once per catalogue; user towers from the users' histories as of the view."""

    model: TwoTowerRecommender

    def items(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Item ids, item vectors y_i and item towers h_i of the catalogue."""

        def compute() -> tuple[list[str], np.ndarray, np.ndarray]:
            items = self.view.catalogue.items
            Y = self.model.embedder_.transform(items)
            return items["item_id"].to_list(), Y, unit_rows(Y @ self.model.params_["W_i"].T)

        return self.view.catalogue.memo(("twotower-items", self.model.fit_id_), compute)

    def prepare(self) -> TwoTowerScorer:
        self.items()
        return self

    def user_towers(self, user_ids: Sequence[str], histories: pl.DataFrame) -> np.ndarray:
        ids, Y_items, _ = self.items()
        data = SiteData(self.view.profiles(user_ids), self.view.catalogue.items, histories)
        X = user_vectors_asof(
            at_time(list(user_ids), self.view.at), data, self.settings, ids, Y_items
        )
        return unit_rows(X @ self.model.params_["W_u"].T)

    def score_users(
        self, user_ids: Sequence[str], histories: pl.DataFrame, item_ids: np.ndarray
    ) -> np.ndarray:
        m = self.model
        Hu = self.user_towers(user_ids, histories)
        ids, _, H_items = self.items()
        Hi = lookup(list(item_ids), ids, H_items)
        coef, intercept = head(m.params_)
        ctx = context_terms(m.params_, m.serving_context(1, self.view.at), m.use_position)
        base = intercept + float(ctx[0] @ coef[1:])
        p = sigmoid(coef[0] * (Hu @ Hi.T) + base)
        p[~Hu.any(axis=1)] = np.nan  # no engagement yet: no signal (as in models.bilinear)
        return p

    def explain_pairs(
        self, user_ids: Sequence[str], item_ids: Sequence[str], top: int = 6
    ) -> list[list[dict[str, Any]]]:
        """The logit as the dot-product part and each context term at serving (position held at
        the reference), with the value each comes from."""
        m = self.model
        users = list(dict.fromkeys(user_ids))
        H = self.user_towers(users, self.view.histories(users))
        row = {u: i for i, u in enumerate(users)}
        ids, _, H_items = self.items()
        Hi = lookup(list(item_ids), ids, H_items)
        coef, intercept = head(m.params_)
        ctx = m.serving_context(1, self.view.at)
        terms = context_terms(m.params_, ctx, m.use_position)[0]
        values: list[Any] = [m.reference_position, int(ctx.hour[0]), int(ctx.weekday[0]) + 1, None]
        out = []
        for j, u in enumerate(user_ids):
            cos = float(H[row[u]] @ Hi[j])
            parts = [
                {
                    "feature": "dot product h_u.h_i",
                    "value": cos,
                    "contribution": float(coef[0] * cos),
                }
            ]
            for name, v, t, k in zip(CONTEXT_TERMS, values, terms, coef[1:], strict=True):
                if name == "position" and not m.use_position:
                    continue
                parts.append({"feature": name, "value": v, "contribution": float(k * t)})
            parts.append({"feature": "intercept", "value": 1.0, "contribution": intercept})
            out.append(parts[:top])
        return out
