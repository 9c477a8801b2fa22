"""The interpretable engagement model: a binomial GLM (logistic regression) with an L2 or
elastic-net penalty, fitted by glum on point-in-time features.

Standard errors come from the curvature of the penalised log-likelihood at the fit (a Laplace
approximation; with alpha -> 0 they are the classical ones). Serving splits the logit by scope
(models/linear.py) so a whole catalogue is scored per user with array arithmetic."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import polars as pl
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

if TYPE_CHECKING:
    import tabmat

from feedrank.exceptions import ConfigError, FeedrankError
from feedrank.features.affinity import (
    LevelAffinity,
    SnapshotAffinity,
    asof_columns,
    fit_affinities,
)
from feedrank.features.encoder import Encoder
from feedrank.features.examples import build_examples
from feedrank.features.groups import ROWS_CHUNK, FeatureGroups, FeatureSpec
from feedrank.features.history import History, Snapshot, T, item_levels
from feedrank.models.base import Recommender, Scorer, has_events, sigmoid
from feedrank.models.linear import CONTEXT_COLUMNS, ItemSide, LinearScorer, UserTerms
from feedrank.settings import Settings
from feedrank.views.site import SiteData
from feedrank.views.view import View


def fit_logistic(
    X: sp.spmatrix | tabmat.MatrixBase,
    y: np.ndarray,
    alpha: float,
    l1_ratio: float,
    sample_weight: np.ndarray | None = None,
) -> tuple[np.ndarray, float, np.ndarray]:
    """Penalised logistic regression by glum's IRLS; returns coef, intercept, standard errors
    (intercept first) from the penalised Hessian X'WX + n*alpha*(1-l1_ratio)*I. X is a
    tabmat matrix (Encoder.design) or a scipy sparse one (converted once, as glum would)."""
    # Imported here: fitting needs glum (and scikit-learn under it), serving a fitted model
    # does not (a server or `recommend` would pay ~1 s to import them).
    import tabmat
    from glum import GeneralizedLinearRegressor

    if sp.issparse(X):
        X = tabmat.SparseMatrix(sp.csc_matrix(X))
    # gradient_tol: glum's default (1e-4) stops with coefficients ~1e-3 from the optimum; at
    # 1e-8 they are within 1e-8 of it, for an iteration or two more (the Spark fit matches to 1e-4).
    model = GeneralizedLinearRegressor(
        family="binomial", alpha=alpha, l1_ratio=l1_ratio, fit_intercept=True, gradient_tol=1e-8
    )
    # One OpenMP thread: tabmat's parallel reductions over categorical blocks sum in a
    # different order run to run, so the same data would give a slightly different model
    # (measured: no slower on this design).
    with threadpool_limits(1, user_api="openmp"):
        try:
            model.fit(X, y, sample_weight=sample_weight)
        except np.linalg.LinAlgError as exc:
            raise FeedrankError(
                f"the GLM's design matrix is singular with alpha={alpha} (one-hot columns always "
                "are without a penalty): use alpha > 0"
            ) from exc
        coef = np.asarray(model.coef_, dtype=np.float64)
        intercept = float(model.intercept_)
        p = sigmoid(X.matvec(coef) + intercept)
        w = p * (1 - p) * (sample_weight if sample_weight is not None else 1.0)
        # The Hessian of the log-likelihood with the intercept as a border:
        # [[sum w, (X'w)'], [X'w, X'WX]]; tabmat's sandwich computes X'WX without forming W.
        xtw = np.asarray(X.transpose_matvec(w)).ravel()
        H = np.empty((X.shape[1] + 1, X.shape[1] + 1))
        H[0, 0], H[0, 1:], H[1:, 0] = w.sum(), xtw, xtw
        H[1:, 1:] = X.sandwich(w)
    n = float(np.sum(sample_weight)) if sample_weight is not None else float(X.shape[0])
    penalty = n * alpha * (1.0 - l1_ratio) * np.ones(H.shape[0])
    penalty[0] = 0.0
    cov = np.linalg.pinv(H + np.diag(penalty))
    se = np.sqrt(np.clip(np.diag(cov), 0, None))
    return coef, intercept, se


class GLMRecommender(Recommender):
    """Logistic GLM over user, item, history, user x item-attribute and context features; with
    `affinity` (item attributes, e.g. ["author"]) also the latent user-by-level term of
    features.affinity per attribute (`affinity_<attr>`, `affinity_own_<attr>`: point in time,
    level factors of rank `affinity_rank` fitted on the training window)."""

    kind = "glm"
    probabilistic = True

    spec_: FeatureSpec
    encoder_: Encoder
    coef_: np.ndarray
    intercept_: float
    se_: np.ndarray
    n_examples_: int
    positive_rate_: float

    affinity_: list[LevelAffinity]

    def __init__(
        self,
        alpha: float = 1e-4,
        l1_ratio: float = 0.0,
        max_levels: int = 50,
        min_count: int = 5,
        affinity: Sequence[str] = (),
        affinity_rank: int = 3,
        affinity_l2: float = 0.3,
    ) -> None:
        self.alpha = alpha
        self.l1_ratio = l1_ratio
        self.max_levels = max_levels
        self.min_count = min_count
        self.affinity = [affinity] if isinstance(affinity, str) else list(affinity)
        self.affinity_rank = affinity_rank
        self.affinity_l2 = affinity_l2

    # -- fitting -----------------------------------------------------------------------------------
    def fit(
        self, data: SiteData, settings: Settings | None = None, examples: pl.DataFrame | None = None
    ) -> Self:
        if not 0.0 <= self.l1_ratio <= 1.0:
            raise ConfigError(f"l1_ratio must be in [0, 1]; got {self.l1_ratio}")
        if self.alpha < 0:
            raise ConfigError(f"alpha must be >= 0; got {self.alpha}")
        if self.affinity and (int(self.affinity_rank) < 1 or not self.affinity_l2 > 0):
            raise ConfigError(
                "affinity_rank must be >= 1 and affinity_l2 > 0; got "
                f"{self.affinity_rank} and {self.affinity_l2}"
            )
        missing = sorted(set(self.affinity) - set(data.items.columns))
        if missing:
            raise ConfigError(
                f"affinity must name item attributes among {sorted(data.items.columns)}; got "
                f"{missing}"
            )
        settings = self._fitted_on(data, settings)
        self.spec_ = FeatureSpec.infer(data, settings)
        ex = examples if examples is not None else build_examples(data, settings)
        if ex.is_empty() or ex["label"].n_unique() < 2:
            raise FeedrankError(
                "the GLM needs training examples of both classes (engagements and impressions or "
                f"sampled non-engagements); got {ex.height} examples with labels "
                f"{sorted(ex['label'].unique().to_list())}"
            )
        history = History(data, self.settings_, self.spec_.share_attributes)
        groups = FeatureGroups(self.spec_, history)
        raw = groups.rows(ex)
        self.affinity_ = fit_affinities(
            history.events,
            data.items,
            self.affinity,
            self.spec_.exposure_types,
            int(self.affinity_rank),
            float(self.affinity_l2),
        )
        raw = self._with_affinity(raw, groups, ex)
        categorical = [
            *self.spec_.user_categoricals,
            *self.spec_.item_categoricals,
            *CONTEXT_COLUMNS,
        ]
        numeric = [c for c in raw.columns if c not in categorical]
        self.encoder_ = Encoder(self.max_levels, self.min_count).fit(
            raw, categorical, numeric, self.spec_.crosses
        )
        X = self.encoder_.design(raw)
        del raw
        y = ex["label"].to_numpy().astype(np.float64)
        self.coef_, self.intercept_, self.se_ = fit_logistic(X, y, self.alpha, self.l1_ratio)
        self.n_examples_ = ex.height
        self.positive_rate_ = float(y.mean())
        return self

    def _groups(self, data: SiteData) -> FeatureGroups:
        return FeatureGroups(self.spec_, History(data, self.settings_, self.spec_.share_attributes))

    def _with_affinity(
        self, raw: pl.DataFrame, groups: FeatureGroups, keys: pl.DataFrame
    ) -> pl.DataFrame:
        """The affinity columns of key rows, as of each row's time, beside the other features."""
        if not self.affinity_:
            return raw
        history = groups.counters
        assert isinstance(history, History), "training rows read a History"
        extra = asof_columns(
            self.affinity_, history.events, history.items, self.spec_.exposure_types, keys
        )
        return pl.concat([raw, extra], how="horizontal")

    # -- serving -----------------------------------------------------------------------------------
    def at(self, view: View) -> GLMScorer:
        return GLMScorer(self, view)

    def predict_proba(self, data: SiteData, rows: pl.DataFrame) -> np.ndarray:
        """Probability for each row (user_id, item_id, timestamp[, position, device]) with features
        as of the row's own timestamp — training's path, for arbitrary pairs and times."""
        self._check()
        groups = self._groups(data)
        columns = [c.name for c in self.encoder_.columns_]
        logits = [  # a chunk's features at a time: never every row's at once
            self.encoder_.partial_logit(
                self._with_affinity(groups.rows(chunk), groups, chunk), columns, self.coef_
            )
            for chunk in rows.iter_slices(ROWS_CHUNK)
        ]
        logit = np.concatenate(logits) if logits else np.zeros(0)
        return sigmoid(logit + self.intercept_)

    # -- interpretation ----------------------------------------------------------------------------
    def coef_table(self) -> pl.DataFrame:
        """Seed 001's table, with uncertainty: feature, coefficient, standard error, z, p-value,
        odds ratio; sorted by coefficient."""
        from scipy import stats

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
            "spec": self.spec_.to_json(),
            "encoder": self.encoder_.to_json(),
            "n_examples": self.n_examples_,
            "positive_rate": self.positive_rate_,
            "intercept": self.intercept_,
            "affinity": [a.to_json() for a in self.affinity_],
        }
        arrays = {"coef": self.coef_, "se": self.se_}
        arrays.update({f"affinity_{i}": a.factors for i, a in enumerate(self.affinity_)})
        return meta, arrays

    def _load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.spec_ = FeatureSpec.from_json(meta["spec"])
        self.encoder_ = Encoder.from_json(meta["encoder"])
        self.coef_, self.se_ = arrays["coef"], arrays["se"]
        self.intercept_ = float(meta["intercept"])
        self.n_examples_ = int(meta["n_examples"])
        self.positive_rate_ = float(meta["positive_rate"])
        self.affinity_ = [
            LevelAffinity.from_json(d, arrays[f"affinity_{i}"])
            for i, d in enumerate(meta.get("affinity", []))
        ]


class GLMScorer(Scorer):
    """The GLM's logit split by scope (models/linear.py) over a Snapshot of the users scored;
    the item part is computed once per catalogue, as of its time."""

    model: GLMRecommender

    def _snapshot(
        self,
        user_ids: Sequence[str],
        histories: pl.DataFrame,
        profiles: pl.DataFrame | None = None,
    ) -> Snapshot:
        m = self.model
        types = sorted(
            set(m.spec_.types) | set(self.view.types) | set(histories["type"].unique().to_list())
        )
        return Snapshot(
            histories,
            self.view.profiles(user_ids) if profiles is None else profiles,
            self.view.catalogue,
            self.settings,
            m.spec_.share_attributes,
            self.view.at,
            types,
        )

    def _linear(
        self,
        user_ids: Sequence[str],
        histories: pl.DataFrame,
        profiles: pl.DataFrame | None = None,
    ) -> LinearScorer:
        m = self.model
        snapshot = self._snapshot(user_ids, histories, profiles)
        groups = FeatureGroups(m.spec_, snapshot)
        terms = self._affinity(snapshot, user_ids).terms() if m.affinity_ else []
        return LinearScorer(
            groups, m.encoder_, m.coef_, m.intercept_, self.view.at, level_terms=terms
        )

    def _affinity(self, snapshot: Snapshot, user_ids: Sequence[str]) -> SnapshotAffinity:
        m = self.model
        return SnapshotAffinity(
            m.affinity_, snapshot.events, snapshot.items, m.spec_.exposure_types, user_ids
        )

    def _item_side(self) -> ItemSide:
        """The item terms of the logit for every candidate, computed once per catalogue (off
        the request path: `prepare`) and shared read-only by every request."""
        from feedrank.schema import empty_events

        catalogue = self.view.catalogue
        return catalogue.memo(
            ("glm-items", self.model.fit_id_),
            lambda: self._linear([], empty_events()).item_side(
                self.view.candidates(), catalogue.as_of
            ),
        )

    def prepare(self) -> GLMScorer:
        self._item_side()
        for attr in self.model.spec_.share_attributes:  # what a request's share lookups read
            item_levels(self.view.catalogue, attr)
        return self

    def score_users(
        self, user_ids: Sequence[str], histories: pl.DataFrame, item_ids: np.ndarray
    ) -> np.ndarray:
        return sigmoid(self.ranking_scores(user_ids, histories, item_ids))

    def ranking_scores(
        self, user_ids: Sequence[str], histories: pl.DataFrame, item_ids: np.ndarray
    ) -> np.ndarray:
        """Logits: the probabilities' order, without computing a probability per pair. The
        item terms come from the catalogue's side (items outside the candidates get their
        own); one user's terms are kept with it while their history and profile stay the
        same, so their next request (a page, a re-rank) only gathers."""
        users = list(user_ids)
        side = self._item_side()
        pos = side.find(item_ids)
        if pos is None:
            linear = self._linear(users, histories)
            side = linear.item_side(item_ids, self.view.catalogue.as_of)
            z = linear.user_terms(users, side).logits(side, np.arange(len(item_ids)))
        else:
            z = self._user_terms(users, histories, side).logits(side, pos)
        z[~has_events(users, histories)] = np.nan  # nothing known of the user: no signal
        return z

    def _user_terms(self, users: list[str], histories: pl.DataFrame, side: ItemSide) -> UserTerms:
        if len(users) != 1:  # a batch: scored once
            return self._linear(users, histories).user_terms(users, side)
        profiles = self.view.profiles(users)
        key = self._user_key(users[0], histories, profiles)
        return side.user_terms(
            key, lambda: self._linear(users, histories, profiles).user_terms(users, side)
        )

    def _user_key(self, user: str, history: pl.DataFrame, profiles: pl.DataFrame) -> Any:
        """What a user's terms depend on besides the catalogue: the view's time, their history
        (its size and newest event: histories only grow, and an erasure is a new catalogue)
        and their profile's values."""
        newest = history["timestamp"].max() if history.height else None
        mine = profiles.filter(pl.col("user_id") == user).to_dicts()
        profile = sorted((k, repr(v)) for k, v in mine[-1].items() if v is not None) if mine else []
        return (user, self.view.at, history.height, newest, tuple(profile))

    def prepare_users(self, user_ids: Sequence[str], batch_size: int = 512) -> int:
        """Compute and keep these users' terms as of the view's time, a block of users at a
        time (a server's warm-up, off the request path: a request of theirs then only
        gathers); how many were kept."""
        side = self._item_side()
        users = list(user_ids)
        for start in range(0, len(users), batch_size):
            chunk = users[start : start + batch_size]
            hist = self.view.histories(chunk)
            profiles = self.view.profiles(chunk)
            terms = self._linear(chunk, hist, profiles).user_terms(chunk, side)
            by_user = hist.partition_by("user_id", as_dict=True, maintain_order=True)
            for r, u in enumerate(chunk):
                mine = by_user.get((u,), hist.clear())
                side.keep_user(self._user_key(u, mine, profiles), terms.row(r))
        return len(users)

    def kept_users(self, n: int) -> list[str]:
        """The users whose terms were most recently asked for over this catalogue."""
        return list(dict.fromkeys(key[0] for key in self._item_side().kept_users(n)))

    def reported(self, ranked: np.ndarray) -> np.ndarray:
        return sigmoid(ranked)

    def explain_pairs(
        self, user_ids: Sequence[str], item_ids: Sequence[str], top: int = 5
    ) -> list[list[dict[str, Any]]]:
        """Largest contributions (coefficient x encoded value, summed per raw feature) to the
        logit of each pair at the view's time, with the raw value that produced each; one
        feature frame and one encoding for all pairs."""
        n = len(user_ids)
        if n == 0:
            return []
        m = self.model
        users = list(dict.fromkeys(user_ids))
        groups = FeatureGroups(m.spec_, self._snapshot(users, self.view.histories(users)))
        rows = pl.DataFrame(
            {
                "user_id": list(user_ids),
                "item_id": list(item_ids),
                T: [self.view.at] * n,
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
        raw = groups.rows(rows)
        if m.affinity_:
            snapshot = groups.counters
            assert isinstance(snapshot, Snapshot), "explanations read a Snapshot"
            levels = {a.attr: groups.item_levels(rows["item_id"], a.attr) for a in m.affinity_}
            extra = self._affinity(snapshot, users).pairs(list(user_ids), levels)
            raw = pl.concat([raw, extra], how="horizontal")
        weighted = m.encoder_.transform(raw).multiply(m.coef_).tocsc()
        slices = m.encoder_.column_slices()
        per_column = []  # (name, contribution per row, raw value per row)
        for col in m.encoder_.columns_:
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
