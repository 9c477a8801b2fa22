"""A store's records as Parquet, what a cluster reads (Spark, or any engine that reads Parquet),
and events read back from such a directory for training.

Interactions are written a batch at a time (memory follows the batch), partitioned by UTC day
(`DIR/day=2026-01-31/part-….parquet`, Hive style) so a job over a date range reads only those
days; users and items are one file each (`DIR/part-0.parquet`). The columns are the canonical
schema's (feedrank.schema), so a directory reads back as what the store holds."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from feedrank.exceptions import ConfigError, FeedrankError
from feedrank.schema import EVENT_COLUMNS
from feedrank.store.base import Store

KINDS = ("interactions", "users", "items")
FORMATS = ("parquet",)
DAY = "day"  # the partition column (a directory level, not a column of the files)


def export(store: Store, kind: str, directory: str | Path, fmt: str = "parquet") -> int:
    """Write the store's `kind` records under `directory` (which must be empty or new); returns
    the number of rows written."""
    if kind not in KINDS:
        raise ConfigError(f"export must be one of {list(KINDS)}; got '{kind}'")
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {list(FORMATS)}; got '{fmt}'")
    out = Path(directory)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FeedrankError(
            f"the export directory must be new or empty (an export never mixes with older files); "
            f"got {out}, which is not"
        )
    out.mkdir(parents=True, exist_ok=True)
    if kind == "users":
        return _write_one(store.users(), out)
    if kind == "items":
        return _write_one(store.items(), out)
    n = 0
    for i, batch in enumerate(store.scan_events()):
        _write_days(batch, out, f"part-{i:05d}")
        n += batch.height
    return n


def _write_one(frame: pl.DataFrame, out: Path) -> int:
    frame.write_parquet(out / "part-0.parquet")
    return frame.height


def _write_days(events: pl.DataFrame, out: Path, name: str) -> None:
    days = events.with_columns(pl.col("timestamp").dt.strftime("%Y-%m-%d").alias(DAY))
    for (day,), part in days.partition_by(DAY, as_dict=True, maintain_order=True).items():
        folder = out / f"{DAY}={day}"
        folder.mkdir(exist_ok=True)
        part.drop(DAY).write_parquet(folder / f"{name}.parquet")


def read_events(directory: str | Path) -> pl.DataFrame:
    """The events of an exported directory (or any Parquet files with the required columns),
    in the canonical schema, sorted by time."""
    path = Path(directory)
    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    if not files or not files[0].exists():
        raise FeedrankError(
            f"--events must be a directory of Parquet files (`feedrank export interactions "
            f"--format parquet DIR`); got {path}, which has none"
        )
    frame = pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed")
    frame = frame.drop(DAY, strict=False)
    missing = [c for c in ("user_id", "type", "timestamp") if c not in frame.columns]
    if missing:
        raise FeedrankError(
            f"event files must have the columns user_id, type, timestamp; got {frame.columns} "
            f"in {path} (missing {missing})"
        )
    defaults = {"item_id": "", "value": 1.0}
    return frame.select(
        pl.col(c).cast(dtype) if c in frame.columns else pl.lit(defaults.get(c), dtype).alias(c)
        for c, dtype in EVENT_COLUMNS.items()
    ).sort("timestamp", maintain_order=True)
