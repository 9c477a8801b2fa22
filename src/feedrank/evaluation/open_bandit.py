"""Click models on real logged impressions: the Open Bandit Dataset (ZOZOTOWN, small version;
see ../shared/data/open-bandit/README.md). Rows are impressions at positions 1-3 with a click
label, hashed user features, per-item past-click counts of the user (``user-item_affinity_k``)
and item features. There are no user ids: each row is one anonymous visit.

The comparison fits on the earlier part of the log (by timestamp) and measures on the later part:
AUC (with a bootstrap standard error: clicks are rare), log loss and expected calibration error,
for the GLM, the bilinear model (Model 1), the two-tower model (Model 2, when torch is
installed) and an item-CTR baseline. Campaigns are stacked with their item ids prefixed
(``men:14``), since item indices restart per campaign.

Vectors, the seed's way:
- y_i: one-hots of the item's id, its hashed features 1-3 and the quartile of feature 0
  (models/vectors.py's metadata embedder), reduced by PCA, unit length;
- x_u: the weighted mean of the vectors of items clicked before the impression — the user's
  own past clicks (the affinity counts, logged before the visit) plus the items clicked earlier
  in the log by visitors with the same user features (strictly earlier rows only)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp
from sklearn.metrics import roc_auc_score

from feedrank.evaluation.metrics import classification_metrics
from feedrank.exceptions import ConfigError, MissingExtraError
from feedrank.models.bilinear import augment, fit_bilinear, sigmoid
from feedrank.models.glm import fit_logistic
from feedrank.models.twotower import Context, context_terms, fit_twotower, head, unit_rows
from feedrank.models.vectors import ItemEmbedder
from feedrank.settings import Settings
from feedrank.views.site import SiteData

POLICIES = ("random", "bts")
CAMPAIGNS = ("men", "women")
USER_FEATURES = [f"user_feature_{k}" for k in range(4)]
ITEM_FEATURES = ["item_id", "item_feature_1", "item_feature_2", "item_feature_3", "f0_quartile"]


@dataclass(frozen=True)
class OpenBandit:
    rows: pl.DataFrame  # timestamp, item_id, position, click, user features, cell
    items: pl.DataFrame  # item_id, item features, f0_quartile
    affinity: sp.csr_matrix  # rows x items: the user's past clicks per item


def load(
    root: str | Path, policies: tuple[str, ...] = POLICIES, campaigns: tuple[str, ...] = CAMPAIGNS
) -> OpenBandit:
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"open bandit data must be a directory; got {root}")
    frames, items, blocks = [], [], []
    for campaign in campaigns:
        it = pl.read_csv(root / "random" / campaign / "item_context.csv").drop("")
        it = it.with_columns(
            item_id=pl.lit(f"{campaign}:") + pl.col("item_id").cast(pl.String),
            f0_quartile=((pl.col("item_feature_0").rank("ordinal") - 1) * 4 // pl.len() + 1).cast(
                pl.String
            ),
        )
        items.append(it)
        for policy in policies:
            df = pl.read_csv(root / policy / campaign / f"{campaign}.csv")
            aff_cols = [c for c in df.columns if c.startswith("user-item_affinity_")]
            blocks.append((campaign, df.select(aff_cols).to_numpy()))
            frames.append(
                df.select(
                    pl.col("timestamp").str.to_datetime(time_zone="UTC", time_unit="us"),
                    *[pl.col(f) for f in USER_FEATURES],
                    item_id=pl.lit(f"{campaign}:") + pl.col("item_id").cast(pl.String),
                    position=pl.col("position").cast(pl.Int32),
                    click=pl.col("click").cast(pl.Int8),
                    campaign=pl.lit(campaign),
                    policy=pl.lit(policy),
                )
            )
    all_items = pl.concat(items)
    col = {v: i for i, v in enumerate(all_items["item_id"].to_list())}
    mats = []
    for campaign, A in blocks:  # affinity column k of a campaign is that campaign's item k
        cols = np.array([col[f"{campaign}:{k}"] for k in range(A.shape[1])])
        r, c = np.nonzero(A)
        mats.append(sp.csr_matrix((A[r, c], (r, cols[c])), shape=(A.shape[0], len(col))))
    rows = pl.concat(frames).with_columns(
        cell=pl.concat_str([pl.col("campaign"), *USER_FEATURES], separator="|")
    )
    order = np.argsort(rows["timestamp"].to_numpy(), kind="stable")
    return OpenBandit(rows[order], all_items, sp.vstack(mats, format="csr")[order])


def item_vectors(ob: OpenBandit, dim: int) -> np.ndarray:
    site = SiteData(pl.DataFrame({"user_id": []}), ob.items, pl.DataFrame())
    emb = ItemEmbedder(source="metadata", columns=ITEM_FEATURES, dim=dim, reduction="pca")
    return emb.fit(site, Settings()).transform(ob.items)


def user_vectors(ob: OpenBandit, Y: np.ndarray) -> np.ndarray:
    """Affinity-weighted item vectors plus those of earlier clicks in the same user-feature
    cell (strictly earlier rows), as one weighted mean; zeros without either."""
    rows = ob.rows
    j = item_index(ob)
    clicked = rows["click"].to_numpy().astype(np.float64)
    contrib = Y[j] * clicked[:, None]
    order = np.lexsort((np.arange(rows.height), rows["cell"].to_numpy()))
    cell = rows["cell"].to_numpy()[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = cell[1:] != cell[:-1]
    start = np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
    S = np.cumsum(contrib[order], axis=0)
    n = np.cumsum(clicked[order])
    S_before = np.vstack([np.zeros((1, Y.shape[1])), S])
    n_before = np.concatenate([[0.0], n])
    # exclusive running sums within the cell: up to the previous row of the same cell
    S_cell = np.empty_like(S)
    n_cell = np.empty_like(n)
    S_cell[order] = S_before[np.arange(len(order))] - S_before[start]
    n_cell[order] = n_before[np.arange(len(order))] - n_before[start]
    num = np.asarray(ob.affinity @ Y) + S_cell
    den = np.asarray(ob.affinity.sum(axis=1)).ravel() + n_cell
    return np.divide(num, den[:, None], out=np.zeros_like(num), where=den[:, None] > 0)


def item_index(ob: OpenBandit) -> np.ndarray:
    col = {v: i for i, v in enumerate(ob.items["item_id"].to_list())}
    return np.array([col[i] for i in ob.rows["item_id"].to_list()], dtype=np.int64)


def context(rows: pl.DataFrame) -> Context:
    ts = rows["timestamp"]
    return Context(
        hour=ts.dt.hour().cast(pl.Int64).to_numpy(),
        position=rows["position"].cast(pl.Int64).to_numpy() - 1,
        weekday=ts.dt.weekday().cast(pl.Int64).to_numpy() - 1,
        device=np.full(rows.height, -1),
    )


def glm_design(ob: OpenBandit) -> sp.csr_matrix:
    """The GLM's features: one-hots of item, position, user features (with campaign), item
    features; log1p of the user's past clicks on the shown item and in total."""
    rows = ob.rows.join(
        ob.items.drop("item_feature_0"), on="item_id", how="left", maintain_order="left"
    )
    cats = ["item_id", "position", "campaign", *USER_FEATURES, *ITEM_FEATURES[1:]]
    blocks = []
    for c in cats:
        codes = rows[c].cast(pl.String).fill_null("?").cast(pl.Categorical).to_physical().to_numpy()
        k = int(codes.max()) + 1
        blocks.append(
            sp.csr_matrix(
                (np.ones(len(codes)), (np.arange(len(codes)), codes)), shape=(len(codes), k)
            )
        )
    j = item_index(ob)
    own = np.asarray(ob.affinity[np.arange(len(j)), j]).ravel()
    total = np.asarray(ob.affinity.sum(axis=1)).ravel()
    blocks.append(sp.csr_matrix(np.column_stack([np.log1p(own), np.log1p(total)])))
    return sp.hstack(blocks, format="csr")


def auc_se(y: np.ndarray, p: np.ndarray, reps: int = 200, seed: int = 0) -> float:
    """Bootstrap standard error of the AUC (rows resampled with replacement)."""
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(reps):
        idx = rng.integers(0, len(y), len(y))
        if 0 < y[idx].sum() < len(idx):
            vals.append(roc_auc_score(y[idx], p[idx]))
    return float(np.std(vals))


def compare(
    root: str | Path,
    test_share: float = 0.3,
    dim: int = 32,
    policies: tuple[str, ...] = POLICIES,
    campaigns: tuple[str, ...] = CAMPAIGNS,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Fit every model on the earlier (1 - test_share) of the log, measure on the rest."""
    ob = load(root, policies, campaigns)
    n = ob.rows.height
    cut = int(n * (1 - test_share))
    tr, te = np.arange(cut), np.arange(cut, n)
    c = ob.rows["click"].to_numpy().astype(np.float64)
    Y_items = item_vectors(ob, dim)
    j = item_index(ob)
    X, Y = user_vectors(ob, Y_items), Y_items[j]
    preds: dict[str, np.ndarray] = {}

    # item CTR in the training part, smoothed toward the overall rate: the baseline
    base = c[tr].mean()
    clicks = np.bincount(j[tr], weights=c[tr], minlength=len(Y_items))
    shows = np.bincount(j[tr], minlength=len(Y_items))
    preds["constant"] = np.full(len(te), base)
    preds["item_ctr"] = ((clicks + 20 * base) / (shows + 20))[j[te]]

    D = glm_design(ob)
    coef, intercept, _ = fit_logistic(D[tr], c[tr], alpha=1e-3, l1_ratio=0.0)
    preds["glm"] = sigmoid(np.asarray(D[te] @ coef).ravel() + intercept)

    d = Y.shape[1]
    M = np.zeros((d + 1, d + 1))
    M[:d, :d] = np.eye(d)
    S = np.full((d + 1, d + 1), 10.0)
    S[:d, :d] = 1.0
    W = fit_bilinear(augment(X[tr]), augment(Y[tr]), c[tr], M, S).W
    preds["bilinear"] = sigmoid(np.einsum("nd,de,ne->n", augment(X[te]), W, augment(Y[te])))

    ctx = context(ob.rows)
    try:
        sub = Context(ctx.hour[tr], ctx.position[tr], ctx.weekday[tr], ctx.device[tr])
        P = fit_twotower(X[tr], Y[tr], sub, c[tr], d_out=d)
        hu, hi = unit_rows(X[te] @ P["W_u"].T), unit_rows(Y[te] @ P["W_i"].T)
        k, b0 = head(P)
        test_ctx = Context(ctx.hour[te], ctx.position[te], ctx.weekday[te], ctx.device[te])
        terms = context_terms(P, test_ctx, use_position=True)
        preds["twotower"] = sigmoid(k[0] * np.einsum("nd,nd->n", hu, hi) + terms @ k[1:] + b0)
    except MissingExtraError:
        pass

    y = c[te]
    table = []
    for name, p in preds.items():
        m = classification_metrics(y, p)
        table.append(
            {
                "model": name,
                "roc_auc": m["roc_auc"],
                "auc_se": auc_se(y, p),
                "log_loss": m["log_loss"],
                "ece": m["ece"],
                "mean_p": float(np.mean(p)),
            }
        )
    split = {
        "rows": n,
        "train_rows": cut,
        "test_rows": n - cut,
        "train_clicks": int(c[tr].sum()),
        "test_clicks": int(y.sum()),
        "test_from": str(ob.rows["timestamp"][cut]),
        "test_ctr": float(y.mean()),
    }
    return pl.DataFrame(table), split
