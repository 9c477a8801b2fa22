"""The demo site's true click model as code: its coefficients (`DemoTruth`) and its evaluation on
impressions, logged or hypothetical (what another policy would have shown), through one code path.
The formula and the numbers are documented in feedrank.datasets.demo; `DemoSite.click_probability`
and `DemoSite.impression_truth` are the usual way in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import polars as pl
from numpy.typing import ArrayLike, NDArray

from feedrank.schema import to_timestamp

AGE_BANDS = ("<18", "18-24", "25-34", "35-44", "45-54", "55-64", "65+")
AGE_BAND_BREAKS = (18, 25, 35, 45, 55, 65)
IMPRESSION_COLUMNS = ("user_id", "item_id", "position", "timestamp")
_DAY_US = 86_400 * 1_000_000
_CLICK_WINDOW = timedelta(minutes=10)


@dataclass(frozen=True)
class DemoTruth:
    """Every coefficient of the true click model (see the module docstring for the formula).

    intercept: log-odds of a click when every other term is 0.
    gender_content: (gender, content_type) -> effect; every cell present.
    ageband_lang: (age band label, lang) -> effect; every cell present.
    taste_coef: multiplies the user's taste share for the item's content type.
    position_effect: slate position (1-based) -> effect; position 1 is 0.
    freshness_coef: multiplies log1p(item age in days at the impression).
    author_quality: author -> effect.
    user_taste: the latent taste, one row per user: user_id, then one Float64 column per content
        type (``article``, ``video``, ...) summing to 1.
    user_author: the latent user-by-author term (user_id, author, effect), or None when the
        site has none (author_affinity 0).
    """

    intercept: float
    gender_content: dict[tuple[str, str], float]
    ageband_lang: dict[tuple[str, str], float]
    taste_coef: float
    position_effect: dict[int, float]
    freshness_coef: float
    author_quality: dict[str, float]
    user_taste: pl.DataFrame
    user_author: pl.DataFrame | None = None

    def logit(
        self,
        *,
        gender: ArrayLike | pl.Series,
        content_type: ArrayLike | pl.Series,
        age_band: ArrayLike | pl.Series,
        lang: ArrayLike | pl.Series,
        taste: ArrayLike | pl.Series,
        position: ArrayLike | pl.Series,
        item_age_days: ArrayLike | pl.Series,
        author: ArrayLike | pl.Series,
        user_author: ArrayLike | pl.Series | None = None,
    ) -> NDArray[np.float64]:
        """z of the true model, element-wise over equally long arrays, lists or Polars Series
        (scalars broadcast). `taste` is the user's share for the item's content type;
        `user_author` the user-by-author term of each row (None: 0). Unknown categories
        raise."""
        cols: dict[str, Any] = {
            "gender": gender,
            "content_type": content_type,
            "age_band": age_band,
            "lang": lang,
            "taste": taste,
            "position": position,
            "item_age_days": item_age_days,
            "author": author,
        }
        series = {
            k: v if isinstance(v, pl.Series) else pl.Series(np.atleast_1d(np.asarray(v)))
            for k, v in cols.items()
        }
        allowed: dict[str, set[Any]] = {
            "gender": {g for g, _ in self.gender_content},
            "content_type": {c for _, c in self.gender_content},
            "age_band": {b for b, _ in self.ageband_lang},
            "lang": {lg for _, lg in self.ageband_lang},
            "position": set(self.position_effect),
            "author": set(self.author_quality),
        }
        for name, values in allowed.items():
            unknown = set(series[name].unique().to_list()) - values
            if unknown:
                raise ValueError(f"{name} must be one of {sorted(values)}; got {sorted(unknown)}")
        n = max(len(v) for v in series.values())
        df = pl.DataFrame(
            {k: v.new_from_index(0, n) if len(v) == 1 else v for k, v in series.items()}
        )
        gc = {f"{g}|{c}": v for (g, c), v in self.gender_content.items()}
        al = {f"{b}|{lg}": v for (b, lg), v in self.ageband_lang.items()}
        z = df.select(
            self.intercept
            + pl.concat_str("gender", "content_type", separator="|").replace_strict(
                gc, return_dtype=pl.Float64
            )
            + pl.concat_str("age_band", "lang", separator="|").replace_strict(
                al, return_dtype=pl.Float64
            )
            + self.taste_coef * pl.col("taste").cast(pl.Float64)
            + pl.col("position")
            .cast(pl.Int64)
            .replace_strict(self.position_effect, return_dtype=pl.Float64)
            + self.freshness_coef * pl.col("item_age_days").cast(pl.Float64).log1p()
            + pl.col("author").replace_strict(self.author_quality, return_dtype=pl.Float64)
        ).to_series()
        out = z.to_numpy().astype(np.float64)
        if user_author is not None:
            out = out + np.asarray(user_author, dtype=np.float64)
        return out


def age_band(age: pl.Expr) -> pl.Expr:
    """Age in years -> band label ("<18", "18-24", ..., "65+"), as String, named age_band."""
    band: Any = pl.when(age.is_null()).then(pl.lit(None, pl.String))
    for upper, label in zip(AGE_BAND_BREAKS, AGE_BANDS, strict=False):
        band = band.when(age < upper).then(pl.lit(label))
    out: pl.Expr = band.otherwise(pl.lit(AGE_BANDS[-1])).alias("age_band")
    return out


def evaluate(
    truth: DemoTruth, users: pl.DataFrame, items: pl.DataFrame, impressions: pl.DataFrame
) -> pl.DataFrame:
    """Impressions (user_id, item_id, position, timestamp; other columns are carried along) ->
    the same rows, in the same order, with gender, age_band, content_type, lang, author, taste,
    item_age_days, z and p_click (the true click probability) added.

    Raises ValueError for a missing column, a user or item the site does not have, a position
    the truth has no effect for, or an impression without a time or before its item existed."""
    _require_columns(impressions)
    imp = impressions.with_columns(
        pl.col("user_id").cast(pl.String),
        pl.col("item_id").cast(pl.String),
        to_timestamp(pl.col("timestamp"), impressions.schema["timestamp"]),
    )
    _known(imp["user_id"], users["user_id"], "user_id", "the site's users")
    _known(imp["item_id"], items["item_id"], "item_id", "the site's items")
    positions = sorted(truth.position_effect)
    _known(imp["position"], pl.Series(positions), "position", str(positions))
    taste_long = truth.user_taste.unpivot(
        index="user_id", variable_name="content_type", value_name="taste"
    )
    imp = (
        imp.join(
            users.select("user_id", "gender", "age"),
            on="user_id",
            how="left",
            maintain_order="left",
        )
        .join(
            items.select("item_id", "created_at", "content_type", "lang", "author"),
            on="item_id",
            how="left",
            maintain_order="left",
        )
        .join(taste_long, on=["user_id", "content_type"], how="left", maintain_order="left")
        .join(
            truth.user_author
            if truth.user_author is not None
            else pl.DataFrame(
                schema={"user_id": pl.String, "author": pl.String, "effect": pl.Float64}
            ),
            on=["user_id", "author"],
            how="left",
            maintain_order="left",
        )
        .with_columns(
            age_band(pl.col("age")),
            item_age_days=(pl.col("timestamp") - pl.col("created_at")).dt.total_microseconds()
            / _DAY_US,
        )
    )
    early = imp.filter(pl.col("timestamp").is_null() | (pl.col("item_age_days") < 0))
    if not early.is_empty():
        row = early.row(0, named=True)
        raise ValueError(
            "an impression needs a timestamp at or after its item's created_at; got "
            f"{row['timestamp']} for item {row['item_id']!r} created {row['created_at']} "
            f"({early.height} such row(s))"
        )
    z = truth.logit(
        gender=imp["gender"],
        content_type=imp["content_type"],
        age_band=imp["age_band"],
        lang=imp["lang"],
        taste=imp["taste"],
        position=imp["position"].cast(pl.Float64).cast(pl.Int64),
        item_age_days=imp["item_age_days"],
        author=imp["author"],
        user_author=imp["effect"].fill_null(0.0) if truth.user_author is not None else None,
    )
    return imp.drop("age", "created_at", "effect").with_columns(
        z=pl.Series(z), p_click=pl.Series(1.0 / (1.0 + np.exp(-z)))
    )


def _require_columns(impressions: pl.DataFrame) -> None:
    if any(c not in impressions.columns for c in IMPRESSION_COLUMNS):
        raise ValueError(
            f"impressions must have the columns {list(IMPRESSION_COLUMNS)}; "
            f"got {impressions.columns}"
        )


def _known(values: pl.Series, allowed: pl.Series, name: str, described: str) -> None:
    # Positions compare as numbers (3.0 and "3" are 3), ids as text.
    kind = pl.Float64 if allowed.dtype.is_numeric() else pl.String
    ok = values.cast(kind, strict=False).is_in(allowed.cast(kind).implode()).fill_null(False)
    unknown = values.filter(~ok).unique(maintain_order=True)
    if not unknown.is_empty():
        shown = unknown.head(5).to_list()
        raise ValueError(
            f"{name} must be one of {described}; got {shown}"
            + (f" and {unknown.len() - 5} more" if unknown.len() > 5 else "")
        )


def click_probability(
    truth: DemoTruth, users: pl.DataFrame, items: pl.DataFrame, impressions: pl.DataFrame
) -> NDArray[np.float64]:
    """The true click probability of each impression, in the frame's row order."""
    _require_columns(impressions)
    cols = impressions.select(IMPRESSION_COLUMNS)
    out: NDArray[np.float64] = evaluate(truth, users, items, cols)["p_click"].to_numpy()
    return out


def impression_truth(
    truth: DemoTruth, users: pl.DataFrame, items: pl.DataFrame, events: pl.DataFrame
) -> pl.DataFrame:
    """The logged impressions of `events` through `evaluate`, sorted by time, with `clicked`:
    a click on the same user and item followed within 10 minutes."""
    logged = events.filter(pl.col("type") == "impression").select(
        "event_id", "user_id", "item_id", "timestamp", "position"
    )
    clicks = (
        events.filter(pl.col("type") == "click")
        .select("user_id", "item_id", pl.col("timestamp").alias("click_ts"))
        .sort("click_ts")
    )
    imp = (
        evaluate(truth, users, items, logged)
        .sort("timestamp", "event_id")
        .join_asof(
            clicks,
            left_on="timestamp",
            right_on="click_ts",
            by=["user_id", "item_id"],
            strategy="forward",
            tolerance=_CLICK_WINDOW,
            check_sortedness=False,
        )
        .with_columns(clicked=pl.col("click_ts").is_not_null())
    )
    return imp.select(
        "event_id", "user_id", "item_id", "timestamp", "position", "gender", "age_band",
        "content_type", "lang", "author", "taste", "item_age_days", "z", "p_click", "clicked",
    )  # fmt: skip
