"""Model 1 (bilinear logistic, identity prior) fit time: feedrank's L-BFGS on the d x d matrix
with the analytic gradient, against the same MAP problem solved by glum on the flattened
outer-product features x_u (x) y_i (d^2 columns) with x_u . y_i as offset, W = I + V and V
penalised toward 0 (alpha = 1 / (n sigma0^2) gives the same objective).

Sizes: d = 64 and d = 300 on 1M examples for feedrank alone (glum's float64 design would be
33 GB and 720 GB there), and side by side where glum's design fits in memory (about 2 GB of float64).
The two answers are compared (max |W_feedrank - (I + V_glum)|) and the ratio printed.

    .venv/bin/python bench/bench_bilinear.py [--small] [--part all|alone|side]
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import Row, print_table, timed
from glum import GeneralizedLinearRegressor

from feedrank.models.bilinear import fit_bilinear, sigmoid

SIGMA0 = 1.0
GLUM_BUDGET_BYTES = 2e9


def simulate(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit-scale vectors (coordinates N(0, 1/d)) and clicks from W = I + noise."""
    rng = np.random.default_rng(seed)
    W = np.eye(d) + rng.normal(0, 1.0 / np.sqrt(d), (d, d))
    X = rng.normal(0, 1 / np.sqrt(d), (n, d)).astype(np.float32)
    Y = rng.normal(0, 1 / np.sqrt(d), (n, d)).astype(np.float32)
    z = np.empty(n)
    for s in range(0, n, 100_000):  # chunks keep the float64 temporaries small
        z[s : s + 100_000] = np.einsum("nd,nd->n", X[s : s + 100_000] @ W, Y[s : s + 100_000])
    c = (rng.random(n) < sigmoid(z)).astype(np.float64)
    return X, Y, c


def ours(X: np.ndarray, Y: np.ndarray, c: np.ndarray) -> np.ndarray:
    # one BLAS thread below ~1e9 flops per product (the model's default), every core above
    n, d = X.shape
    threads = 1 if n * d * d < 1e9 else None
    fit = fit_bilinear(X, Y, c, prior_sd=SIGMA0, max_iter=1000, tol=1e-7, threads=threads)
    return fit.W


def glum_fit(X: np.ndarray, Y: np.ndarray, c: np.ndarray) -> np.ndarray:
    n, d = X.shape
    # float64: in float32 glum's line searches stall near the optimum
    F = np.einsum("nj,nl->njl", X.astype(np.float64), Y).reshape(n, d * d)  # column j*d+l: x_j y_l
    offset = np.einsum("nd,nd->n", X, Y).astype(np.float64)
    model = GeneralizedLinearRegressor(
        family="binomial",
        alpha=1.0 / (n * SIGMA0**2),
        l1_ratio=0.0,
        fit_intercept=False,
        solver="lbfgs" if d * d > 5000 else "irls-cd",
        gradient_tol=1e-7,
        max_iter=1000,
    )
    model.fit(F, c, offset=offset)
    return np.eye(d) + np.asarray(model.coef_).reshape(d, d)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", action="store_true", help="tiny sizes, to smoke-test")
    parser.add_argument(
        "--part", choices=["all", "alone", "side"], default="all",
        help="alone: the 1M-example fits; side: the side-by-side runs with glum",
    )  # fmt: skip
    args = parser.parse_args()
    if args.small:
        alone = [(20_000, 16), (20_000, 64)]
        side = [(5_000, 16), (2_000, 32)]
    else:
        alone = [(1_000_000, 64), (1_000_000, 300)]
        side = [(500_000, 16), (50_000, 64), (2_500, 300)]
    alone = alone if args.part in ("all", "alone") else []
    side = side if args.part in ("all", "side") else []
    rows: list[Row] = []
    for n, d in alone:
        X, Y, c = simulate(n, d)
        t, W = timed(lambda X=X, Y=Y, c=c: ours(X, Y, c))
        print(
            f"feedrank  n={n:>9,} d={d:>3}: {t:8.2f} s  |W - I|max {np.abs(W - np.eye(d)).max():.3f}"
        )
        rows.append(
            Row(
                "bilinear MAP",
                f"n={n:,} d={d}",
                t,
                "glum: design too big",
                float("nan"),
                n,
                "examples/s",
            )
        )
    for n, d in side:
        if n * d * d * 8 > GLUM_BUDGET_BYTES:
            continue
        X, Y, c = simulate(n, d, seed=1)
        t_ours, W = timed(lambda X=X, Y=Y, c=c: ours(X, Y, c))
        t_glum, Wg = timed(lambda X=X, Y=Y, c=c: glum_fit(X, Y, c))
        diff = float(np.abs(W - Wg).max())
        print(
            f"side by side n={n:>7,} d={d:>3}: feedrank {t_ours:7.2f} s, glum {t_glum:7.2f} s, "
            f"max |W - W_glum| = {diff:.2e}"
        )
        if diff > 1e-2:
            raise SystemExit(f"the two solvers disagree: max |W - W_glum| = {diff:.3g}")
        rows.append(Row("bilinear MAP", f"n={n:,} d={d}", t_ours, "glum", t_glum, n, "examples/s"))
    print_table("Model 1 fit (L-BFGS, analytic gradient) vs glum on outer-product features", rows)


if __name__ == "__main__":
    main()
