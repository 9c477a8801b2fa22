"""L2-penalised logistic regression on one sparse design matrix simulated from a known model.

feedrank: feedrank.models.glm.fit_logistic(X, y, alpha, l1_ratio=0) -- glum's IRLS fit, then
standard errors from the penalised Hessian (X'WX + n*alpha*I, inverted): it does more work than
the peers, which return coefficients only.

Peers: glum.GeneralizedLinearRegressor(family="binomial", alpha) directly (what feedrank wraps),
and sklearn.linear_model.LogisticRegression(solver="lbfgs") with C matched to the same penalty.
glum minimises mean(deviance)/2 + alpha/2 ||b||^2, sklearn C * sum(log loss) + ||b||^2 / 2;
with C = 1 / (n * alpha) they are the same objective (neither penalises the intercept). sklearn
runs at its default tol (1e-4) and at tol=1e-8, which converges to the optimum.

    .venv/bin/python bench/bench_glm.py [--small]
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from _common import Row, check, parse_args, print_table, timed
from glum import GeneralizedLinearRegressor
from sklearn.linear_model import LogisticRegression

from feedrank.models.glm import fit_logistic

LEVELS = (60, 60, 80, 20)  # four categoricals; the first level of each is the reference
NUMERIC_COEF = (0.5, -0.3, 0.2)
INTERCEPT = -2.0
ALPHA = 1e-6


def simulate(n: int, seed: int = 0) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """CSR design (one-hot without reference levels, then standard-normal numerics), labels
    drawn from the logistic model, and the true coefficients."""
    rng = np.random.default_rng(seed)
    blocks, beta = [], []
    for n_levels in LEVELS:
        codes = rng.integers(0, n_levels, n)
        rows = np.flatnonzero(codes > 0)
        blocks.append(
            sp.csr_matrix((np.ones(rows.size), (rows, codes[rows] - 1)), shape=(n, n_levels - 1))
        )
        beta.append(rng.normal(0.0, 0.5, n_levels - 1))
    blocks.append(sp.csr_matrix(rng.normal(size=(n, len(NUMERIC_COEF)))))
    beta.append(np.array(NUMERIC_COEF))
    X = sp.hstack(blocks, format="csr")
    b = np.concatenate(beta)
    p = 1.0 / (1.0 + np.exp(-(X @ b + INTERCEPT)))
    y = (rng.random(n) < p).astype(np.float64)
    return X, y, b


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    n = 20_000 if args.small else 1_000_000
    X, y, truth = simulate(n)
    n_onehot = sum(LEVELS) - len(LEVELS)
    size = f"{n:,} x {X.shape[1]} ({n_onehot} one-hot + {len(NUMERIC_COEF)} numeric)"
    print(f"input: {size}, nnz {X.nnz:,}, positive rate {y.mean():.3f}, alpha {ALPHA:g} (L2)")

    def feedrank() -> tuple[np.ndarray, float, np.ndarray]:
        return fit_logistic(X, y, ALPHA, 0.0)

    def glum() -> tuple[np.ndarray, float]:
        m = GeneralizedLinearRegressor(family="binomial", alpha=ALPHA, l1_ratio=0.0).fit(X, y)
        return np.asarray(m.coef_), float(m.intercept_)

    def sklearn(tol: float) -> tuple[np.ndarray, float]:
        m = LogisticRegression(C=1.0 / (n * ALPHA), solver="lbfgs", tol=tol, max_iter=5_000)
        m.fit(X, y)
        return m.coef_.ravel(), float(m.intercept_[0])

    t_fr, (c_fr, b_fr, se) = timed(feedrank, repeat=3)
    t_gl, (c_gl, b_gl) = timed(glum, repeat=3)
    t_sk, (c_sk, b_sk) = timed(lambda: sklearn(1e-4), repeat=3)
    t_sk8, (c_sk8, b_sk8) = timed(lambda: sklearn(1e-8), repeat=1)

    fits = {
        "feedrank": (c_fr, b_fr),
        "glum": (c_gl, b_gl),
        "sklearn tol=1e-4": (c_sk, b_sk),
        "sklearn tol=1e-8": (c_sk8, b_sk8),
    }
    print("\nmax |coefficient difference| (slopes; intercept in brackets)")
    names = list(fits)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            d = np.abs(fits[a][0] - fits[b][0]).max()
            print(f"  {a:<17} vs {b:<17} {d:.2e}  [{abs(fits[a][1] - fits[b][1]):.2e}]")
    print("coefficient recovery against the truth (max |b - b_true| over slopes; RMSE)")
    for name, (c, b0) in fits.items():
        err = c - truth
        print(
            f"  {name:<17} max {np.abs(err).max():.4f}  rmse {np.sqrt(np.mean(err**2)):.4f}"
            f"  intercept {b0:+.4f} (true {INTERCEPT:+.1f})"
        )
    z = np.abs((np.concatenate([[b_fr], c_fr]) - np.concatenate([[INTERCEPT], truth])) / se)
    print(f"feedrank standard errors: share of |b - b_true| / se < 1.96: {np.mean(z < 1.96):.3f}")

    check(np.abs(c_fr - c_gl).max() < 1e-8, "feedrank's coefficients are glum's")
    check(np.abs(c_fr - c_sk8).max() < 5e-3, "feedrank agrees with converged sklearn within 5e-3")

    unit = "rows/s"
    print_table(
        "Logistic regression, L2 (feedrank time includes standard errors)",
        [
            Row("fit + std errors", size, t_fr, "glum (coef only)", t_gl, n, unit),
            Row("fit + std errors", size, t_fr, "sklearn lbfgs tol=1e-4", t_sk, n, unit),
            Row("fit + std errors", size, t_fr, "sklearn lbfgs tol=1e-8", t_sk8, n, unit),
        ],
    )
    print(f"\nstandard errors add ~{t_fr - t_gl:.2f} s to glum's fit in feedrank's time")


if __name__ == "__main__":
    main()
