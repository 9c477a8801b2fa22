"""Reading users, items and interactions from CSV, JSON Lines and Parquet into the store.

Rows are validated in vectorised chunks; good rows are written, bad rows are reported with file
and line (or nothing is written at all in strict mode). A CSV without a header row takes its
column names from the caller; event type names can be mapped (pv -> page_view) on the way in.
The report counts the valid events per type, so a summary can say what each one counts as."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import polars as pl

from feedrank.exceptions import RowError, ValidationError
from feedrank.pii import PiiPolicy
from feedrank.schema import Validated, validate_events, validate_items, validate_users
from feedrank.settings import Settings
from feedrank.store.base import Store

Kind = Literal["users", "items", "interactions"]
FORMATS = ("csv", "jsonl", "parquet")
_EXTENSIONS = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_ID_COLUMNS = ("user_id", "item_id", "event_id")
CHUNK_ROWS = 200_000  # rows validated at a time
# Rows written per store call (one transaction): a large import's index pages are rewritten
# once per transaction, so fewer, larger ones are much faster (bench_import).
WRITE_ROWS = 1_000_000


@dataclass
class ImportReport:
    kind: str
    source: str
    rows: int = 0
    written: int = 0  # new rows (events already stored are not counted)
    bad: int = 0
    errors: list[RowError] = field(default_factory=list)
    types: dict[str, int] = field(default_factory=dict)  # valid events per type
    engagements: int = 0  # valid events that count as engagements under the settings
    redacted: int = 0  # personal values dropped (e-mail, phone, precise location)

    @property
    def duplicates(self) -> int:
        return self.rows - self.bad - self.written


def detect_format(path: Path, fmt: str | None = None) -> str:
    if fmt:
        if fmt not in FORMATS:
            raise ValidationError(
                [RowError(None, "format", f"format must be one of {list(FORMATS)}; got '{fmt}'")]
            )
        return fmt
    found = _EXTENSIONS.get(path.suffix.lower())
    if found is None:
        raise ValidationError(
            [
                RowError(
                    None,
                    "format",
                    f"file extension must be one of {sorted(_EXTENSIONS)} "
                    f"(or pass --format); got '{path.suffix}'",
                    str(path),
                )
            ]
        )
    return found


def _file_error(path: Path, line: int | None, message: str) -> ValidationError:
    return ValidationError([RowError(line, "file", message, path.name)])


_EXPECTED = {
    "csv": "UTF-8 CSV with a header row and the same number of fields on every line",
    "jsonl": "UTF-8 JSON Lines, one object per line",
    "parquet": "a Parquet file",
}


def _first_bad_line(path: Path, kind: str) -> tuple[int | None, str]:
    """Where a file the fast reader refused goes wrong, and how, read line by line with the
    standard library (only after a failure: the fast path stays columnar)."""
    with path.open("rb") as fh:
        for n, raw in enumerate(fh, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return n, f"bytes that are not UTF-8 ({raw[exc.start : exc.end]!r})"
    if kind == "jsonl":
        with path.open(encoding="utf-8") as fh:
            for n, text in enumerate(fh, start=1):
                try:
                    value = json.loads(text) if text.strip() else {}
                except ValueError as exc:
                    return n, f"a line that is not JSON ({exc})"
                if not isinstance(value, dict):
                    return n, f"a JSON {type(value).__name__}, not an object"
    if kind == "csv":
        with path.open(encoding="utf-8", newline="") as fh:
            reader, width = csv.reader(fh, strict=True), None
            try:
                for row in reader:
                    width = len(row) if width is None else width
                    if len(row) != width:
                        return (
                            reader.line_num,
                            f"{len(row)} fields where the first line has {width}",
                        )
            except csv.Error as exc:
                return reader.line_num, f"{exc} (an unclosed quote?)"
    return None, ""


def _read(path: Path, kind: str, read: Callable[[], pl.DataFrame]) -> pl.DataFrame:
    """The reader's frame, or one ValidationError naming the file, the line and the defect."""
    if path.is_dir():
        raise _file_error(path, None, f"a {kind} file must be a file; got a directory")
    if path.stat().st_size == 0:
        raise _file_error(path, None, f"a {kind} file must be {_EXPECTED[kind]}; got an empty file")
    try:
        return read()
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        line, what = _first_bad_line(path, kind) if kind != "parquet" else (None, "")
        got = what or str(exc).strip().splitlines()[0][:200]
        raise _file_error(
            path, line, f"a {kind} file must be {_EXPECTED[kind]}; got {got}"
        ) from exc


def read_table(
    path: str | Path,
    fmt: str | None = None,
    rename: Mapping[str, str] | None = None,
    columns: list[str] | None = None,
) -> tuple[pl.DataFrame, int]:
    """Read a file as a frame (ids always as strings) and the line number of its first row.
    `columns`: the names of a CSV's columns when it has no header row."""
    path = Path(path)
    if not path.exists():
        raise ValidationError([RowError(None, "file", f"file must exist; got '{path}'")])
    kind = detect_format(path, fmt)
    if columns is not None and kind != "csv":
        raise ValidationError(
            [RowError(None, "--no-header", f"--no-header applies to CSV files; got a {kind} file")]
        )
    if kind == "csv":
        # Every column as text: ids like 0042 or 38-digit cookies stay exact; types come later.
        if columns is not None:
            twice = sorted({c for c in columns if columns.count(c) > 1})
            if twice:
                raise ValidationError(
                    [
                        RowError(
                            None,
                            "--no-header",
                            f"--no-header must name each column once; got {twice} more than once",
                            str(path.name),
                        )
                    ]
                )
            # Read with polars' own names first: passing new_columns of the wrong length makes
            # polars raise its SchemaError, not the message below.
            df = _read(
                path,
                kind,
                lambda: pl.read_csv(
                    path, infer_schema=False, has_header=False, truncate_ragged_lines=False
                ),
            )
            if df.width != len(columns):
                raise ValidationError(
                    [
                        RowError(
                            None,
                            "--no-header",
                            f"--no-header must name every column: the file has {df.width}; "
                            f"got {len(columns)} names {columns}",
                            str(path.name),
                        )
                    ]
                )
            df = df.rename(dict(zip(df.columns, columns, strict=True)))
            first_line = 1
        else:
            df = _read(
                path,
                kind,
                lambda: pl.read_csv(path, infer_schema=False, truncate_ragged_lines=False),
            )
            first_line = 2
    elif kind == "jsonl":

        def read_jsonl() -> pl.DataFrame:
            ids = {c: pl.String for c in _ID_COLUMNS if c in _jsonl_keys(path)}
            return pl.read_ndjson(path, infer_schema_length=None, schema_overrides=ids or None)

        df = _read(path, kind, read_jsonl)
        first_line = 1
    else:
        df = _read(path, kind, lambda: pl.read_parquet(path))
        first_line = 1
    if rename:
        missing = [s for s in rename if s not in df.columns]
        if missing:
            raise ValidationError(
                [
                    RowError(
                        None,
                        src,
                        f"--map source column '{src}' must be one of {df.columns}",
                        str(path),
                    )
                    for src in missing
                ]
            )
        df = df.rename(dict(rename))
    twice = [c for c in df.columns if re.fullmatch(r".+_duplicated_\d+", c)]
    if twice:  # polars' name for a repeated header
        raise _file_error(
            path,
            1,
            f"column names must be unique; got {twice[0].rsplit('_duplicated_', 1)[0]!r} more than once",
        )
    for c in _ID_COLUMNS:
        if c in df.columns and not (df.schema[c].is_nested() or df.schema[c] == pl.Binary):
            df = df.with_columns(pl.col(c).cast(pl.String))  # nested: the schema says so
    return df, first_line


def _jsonl_keys(path: Path, lines: int = 1000) -> set[str]:
    """Keys of the first lines: ids among them are read as text (a 38-digit id stays exact)."""
    keys: set[str] = set()
    with path.open() as fh:
        for _, line in zip(range(lines), fh, strict=False):
            if line.strip():
                try:
                    keys.update(json.loads(line))
                except (json.JSONDecodeError, TypeError):
                    break  # the reader reports the bad line
    return keys


def map_types(df: pl.DataFrame, mapping: Mapping[str, str]) -> pl.DataFrame:
    """Event types renamed (pv -> page_view) before validation; others unchanged."""
    if not mapping or "type" not in df.columns:
        return df
    t = pl.col("type").cast(pl.String)
    return df.with_columns(type=t.replace(dict(mapping)))


def validate(
    kind: Kind,
    df: pl.DataFrame,
    settings: Settings,
    source: str | None,
    first_line: int,
    pii: PiiPolicy | None = None,
) -> Validated:
    if kind == "users":
        return validate_users(df, source, first_line, pii=pii, age_bands=settings.age_bands)
    if kind == "items":
        return validate_items(df, source, first_line, settings=settings)
    return validate_events(df, settings, source, first_line, pii=pii)


def write(store: Store, kind: Kind, df: pl.DataFrame) -> int:
    if kind == "users":
        return store.upsert_users(df)
    if kind == "items":
        return store.upsert_items(df)
    return store.add_events(df)


def import_frame(
    store: Store,
    kind: Kind,
    df: pl.DataFrame,
    settings: Settings | None = None,
    *,
    source: str | None = None,
    first_line: int = 1,
    strict: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Validate and write a frame in chunks (settings: the store's unless given), personal
    data reduced as at the HTTP API (PiiPolicy.from_env()). Strict: validate everything first;
    any bad row raises ValidationError and nothing is written."""
    settings = settings or store.settings()
    pii = PiiPolicy.from_env()
    report = ImportReport(kind, source or "<frame>", rows=df.height)

    def counted(v: Validated) -> Validated:
        if kind == "interactions" and v.good.height:
            for t, n in v.good.group_by("type").len().iter_rows():
                report.types[t] = report.types.get(t, 0) + n
            types = sorted(v.good["type"].unique().to_list())
            report.engagements += v.good.filter(settings.engaged_expr(types)).height
        return v

    chunks = [(off, df.slice(off, CHUNK_ROWS)) for off in range(0, df.height, CHUNK_ROWS)]
    checked: Iterable[tuple[int, Validated]] = (
        (c.height, counted(validate(kind, c, settings, source, first_line + off, pii)))
        for off, c in chunks
    )
    if strict:  # everything validated before anything is written
        checked = list(checked)
        n_bad = sum(v.n_bad for _, v in checked)
        if n_bad:
            raise ValidationError([e for _, v in checked for e in v.errors][:50], n_bad)
    pending: list[pl.DataFrame] = []
    pending_rows = 0
    for i, (rows, v) in enumerate(checked):
        report.bad += v.n_bad
        report.redacted += v.redacted
        report.errors.extend(v.errors[: max(0, 50 - len(report.errors))])
        pending.append(v.good)
        pending_rows += rows
        if pending_rows >= WRITE_ROWS or i == len(chunks) - 1:
            report.written += write(store, kind, pl.concat(pending))
            if progress:
                progress(pending_rows)
            pending, pending_rows = [], 0
    return report


def import_file(
    store: Store,
    kind: Kind,
    path: str | Path,
    settings: Settings | None = None,
    *,
    fmt: str | None = None,
    rename: Mapping[str, str] | None = None,
    columns: list[str] | None = None,
    type_map: Mapping[str, str] | None = None,
    strict: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    df, first_line = read_table(path, fmt, rename, columns)
    return import_frame(
        store,
        kind,
        map_types(df, type_map or {}),
        settings,
        source=Path(path).name,
        first_line=first_line,
        strict=strict,
        progress=progress,
    )


def import_pandas(
    store: Store, kind: Kind, frame: object, settings: Settings | None = None, strict: bool = False
) -> ImportReport:
    """pandas in: the same validation as files (lines are the frame's row positions, from 1)."""
    return import_frame(
        store, kind, pl.from_pandas(frame), settings, source="<pandas>", strict=strict
    )  # type: ignore[arg-type]
