"""Seed 004's clickstream (../shared/data/clickstream) as feedrank records.

- `submissions.csv` (cookie, gated_asset_type, page_url, form_submissions): cookie -> user_id,
  page_url -> item_id, form_submissions -> the event's value, type "form_submission".
- `bu_mapping.csv` (business_unit, page_url): item attributes. 10 urls map to two units; both are
  kept: `business_unit` is the primary unit (the url's first row in the mapping file) and
  `business_units` all of them, pipe-joined in file order ("a|f"). Forms absent from the mapping
  (294 of the 469) have neither (null).
- `gated_asset_type` is an item attribute; `asset_class` names its class in the seed's weighting
  (pricing, demo, report, ..., other), and `clickstream_settings()` weighs every submission by
  the class weight (pricing 3.0, demo 2.5, report/ebook/webinar/case study/solution brief/
  whitepaper 2.0, others 1.0) times the count: exactly the seed's `event_strength`.

Both files are read as text with no missing-value markers (pandas' keep_default_na=False), so
the literal asset type 'None' stays a category and 38-digit cookies stay exact strings. The one
exception is deliberate: the cookie 'None' (4 rows) is a missing visitor id, not a visitor; those
rows are skipped as events (their forms still enter the catalogue), which gives the README's
999 cookies and 469 forms out of 3,888 rows.

The data has no timestamps. Every event gets the same synthetic time `EVENT_TIME` (one instant
"at the end of the two months") and every form `ITEM_CREATED_AT`, a day earlier, so all forms
are candidates when serving just after the events. Evaluate with a leave-one-out hold-out
(feedrank.evaluation.loo), never a time split: time carries no signal here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from feedrank.exceptions import RowError, ValidationError
from feedrank.schema import validate_events, validate_items, validate_users
from feedrank.settings import Settings
from feedrank.store.base import Store

EVENT_TYPE = "form_submission"
EVENT_TIME = datetime(2020, 1, 1, tzinfo=UTC)  # synthetic: the data has no timestamps
ITEM_CREATED_AT = EVENT_TIME - timedelta(days=1)
MISSING_COOKIE = "None"

# The seed's gated_asset_type strings -> the classes of its weighting.
ASSET_CLASSES: dict[str, str] = {
    "Gated Get Pricing": "pricing",
    "Gated DemoNow Forms": "demo",
    "Gated Analyst Report Forms": "report",
    "Gated Ebook Forms": "ebook",
    "Gated Webinar Forms": "webinar",
    "Gated Case Study Forms": "case study",
    "Gated Solution Brief Forms": "solution brief",
    "Gated Whitepaper Forms": "whitepaper",
    "Gated Best Practice Form": "other",
    "Gated Infographics Forms": "other",
    "None": "other",
}
CLASS_WEIGHTS: dict[str, float] = {
    "pricing": 3.0,
    "demo": 2.5,
    "report": 2.0,
    "ebook": 2.0,
    "webinar": 2.0,
    "case study": 2.0,
    "solution brief": 2.0,
    "whitepaper": 2.0,
}
DEFAULT_WEIGHT = 1.0
SUBMISSION_COLUMNS = ("cookie", "gated_asset_type", "page_url", "form_submissions")
MAPPING_COLUMNS = ("business_unit", "page_url")


def asset_weights() -> dict[str, float]:
    """Weight per gated_asset_type string (unlisted types, e.g. a new one, get DEFAULT_WEIGHT)."""
    return {t: CLASS_WEIGHTS.get(c, DEFAULT_WEIGHT) for t, c in ASSET_CLASSES.items()}


def clickstream_settings(base: Settings | None = None) -> Settings:
    """Settings for this data: form submissions are the engagement, weighted by asset type."""
    base = base or Settings()
    return Settings.from_dict(
        {
            **base.to_dict(),
            "type_weights": {**base.type_weights, EVENT_TYPE: 1.0},
            "engagement_types": [EVENT_TYPE],
            "attribute_weights": {
                "attribute": "gated_asset_type",
                "values": asset_weights(),
                "default": DEFAULT_WEIGHT,
            },
        }
    )


def default_clickstream_dir(start: Path | None = None) -> Path | None:
    """../shared/data/clickstream relative to the repository (found from this file or `start`),
    when it exists."""
    roots = [start] if start else []
    roots += [Path.cwd(), Path(__file__).resolve().parents[3]]
    for root in roots:
        for base in (root, *root.parents):
            cand = base.parent / "shared" / "data" / "clickstream"
            if (cand / "submissions.csv").exists():
                return cand
    return None


@dataclass(frozen=True)
class Clickstream:
    users: pl.DataFrame  # user_id
    items: pl.DataFrame  # item_id, created_at, gated_asset_type, asset_class, business_unit(s)
    events: pl.DataFrame  # user_id, item_id, type, timestamp, value
    rows: int  # rows in submissions.csv
    skipped_missing_cookie: int

    def summary(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "cookies": self.users.height,
            "forms": self.items.height,
            "events": self.events.height,
            "skipped (cookie 'None')": self.skipped_missing_cookie,
            "forms with a business unit": int(self.items["business_unit"].is_not_null().sum()),
            "forms with two units": int(
                self.items["business_units"].str.contains("|", literal=True).sum()
            ),
        }


def _read(path: Path, columns: tuple[str, ...]) -> pl.DataFrame:
    if not path.exists():
        raise ValidationError([RowError(None, "file", f"file must exist; got '{path}'")])
    # All text, no null markers: 'None' stays 'None', 38-digit cookies stay exact.
    df = pl.read_csv(path, infer_schema=False).with_columns(pl.all().fill_null(""))
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValidationError(
            [
                RowError(
                    None, c, f"column '{c}' is required; the columns are {df.columns}", path.name
                )
                for c in missing
            ]
        )
    return df.select(pl.col(c).str.strip_chars() for c in columns)


def read_clickstream(directory: str | Path) -> Clickstream:
    """Read and validate both files (bad counts are reported with their line)."""
    directory = Path(directory)
    sub = _read(directory / "submissions.csv", SUBMISSION_COLUMNS)
    bu = _read(directory / "bu_mapping.csv", MAPPING_COLUMNS)
    count = pl.col("form_submissions").cast(pl.Float64, strict=False)
    bad = sub.with_row_index("line", offset=2).filter(count.is_null() | (count < 1))
    if bad.height:
        raise ValidationError(
            [
                RowError(
                    line,
                    "form_submissions",
                    f"form_submissions must be a whole number >= 1; got '{v}'",
                    "submissions.csv",
                )
                for line, v in bad.select("line", "form_submissions").head(20).iter_rows()
            ],
            bad.height,
        )
    units = (
        bu.filter(pl.col("business_unit") != "")
        .with_row_index("__order")
        .unique(["page_url", "business_unit"], keep="first")
        .sort("__order")
        .group_by("page_url", maintain_order=True)
        .agg(
            business_unit=pl.col("business_unit").first(),
            business_units=pl.col("business_unit").str.join("|"),
        )
    )
    items = (
        sub.group_by("page_url", maintain_order=True)
        .agg(pl.col("gated_asset_type").mode().sort().first())
        .join(units, on="page_url", how="left", maintain_order="left")
        .select(
            item_id=pl.col("page_url"),
            created_at=pl.lit(ITEM_CREATED_AT),
            gated_asset_type=pl.col("gated_asset_type"),
            asset_class=pl.col("gated_asset_type").replace_strict(
                ASSET_CLASSES, default="other", return_dtype=pl.String
            ),
            business_unit=pl.col("business_unit"),
            business_units=pl.col("business_units"),
        )
    )
    known = sub.filter(pl.col("cookie") != MISSING_COOKIE)
    events = known.select(
        user_id=pl.col("cookie"),
        item_id=pl.col("page_url"),
        type=pl.lit(EVENT_TYPE),
        timestamp=pl.lit(EVENT_TIME),
        value=count,
    )
    users = known.select(user_id=pl.col("cookie")).unique(maintain_order=True)
    return Clickstream(users, items, events, sub.height, sub.height - known.height)


def import_clickstream(
    store: Store, directory: str | Path, settings: Settings | None = None
) -> tuple[Clickstream, dict[str, int]]:
    """Read the files and write users, items and events to the store (idempotent: a second
    import writes no new events). Returns the data and the rows newly written per kind."""
    cs = read_clickstream(directory)
    settings = clickstream_settings(settings)
    written = {
        "users": store.upsert_users(validate_users(cs.users).good),
        "items": store.upsert_items(validate_items(cs.items).good),
    }
    ev = validate_events(cs.events, settings, source="submissions.csv")
    if ev.n_bad:
        raise ValidationError(ev.errors, ev.n_bad)
    written["interactions"] = store.add_events(ev.good)
    if store.stored_settings() != settings.to_dict():  # settings travel with the data
        store.put_settings(settings.to_dict())
    return cs, written
