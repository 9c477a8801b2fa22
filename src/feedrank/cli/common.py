"""What every command shares: the context (store URL, models directory, settings), error
handling at the edge, progress bars, and printing frames as tables (a rich table on a terminal,
tab-separated values when piped, so nothing is wrapped or cut).

Heavy libraries (models, Polars-heavy pipelines) are imported inside the commands that need
them, so `feedrank --help` stays fast."""

from __future__ import annotations

import functools
import json
import math
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console

from feedrank.exceptions import FeedrankError, RowError, ValidationError

if TYPE_CHECKING:
    import polars as pl

    from feedrank.pipeline.registry import Registry
    from feedrank.settings import Settings
    from feedrank.store import Store
    from feedrank.views.site import SiteData

console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Context:
    store_url: str
    models_dir_option: str | None
    settings_file: Path | None = None
    debug: bool = False
    _told: list[str] = field(default_factory=list)

    @cached_property
    def store(self) -> Store:
        from feedrank.store import open_store

        return open_store(self.store_url)

    @cached_property
    def registry(self) -> Registry:
        from feedrank.pipeline.registry import Registry, models_dir

        return Registry(models_dir(self.store_url, self.models_dir_option))

    @cached_property
    def stored_settings(self) -> Settings:
        return self.store.settings()

    @cached_property
    def settings(self) -> Settings:
        """The store's settings, or --settings FILE for this command only (saying what differs
        from the stored ones)."""
        from feedrank.settings import Settings

        if self.settings_file is None:
            return self.stored_settings
        override = Settings.from_file(self.settings_file)
        diff = self.stored_settings.diff(override)
        err_console.print(
            f"settings from {self.settings_file.name} for this command only (not stored; "
            f"`feedrank settings import {self.settings_file.name}` keeps them)"
            + (": " + "; ".join(diff) if diff else ": the same as the stored settings"),
            highlight=False,
            soft_wrap=True,
        )
        return override

    def site(self, events: Path | None = None) -> SiteData:
        """Everything the store holds, as frames (read in columnar batches); with `events`, the
        events of that Parquet directory (`feedrank export`) beside the store's users and items."""
        from feedrank.views.site import SiteData, read_site

        if events is None:
            return read_site(self.store)
        from feedrank.export import read_events

        return SiteData(self.store.users(), self.store.items(), read_events(events))


def ctx_obj(ctx: typer.Context) -> Context:
    obj: Context = ctx.find_root().obj
    return obj


def handle_errors(fn: F) -> F:
    """feedrank's own errors become one clear line on stderr and exit code 2 (the traceback too
    with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ValidationError as exc:
            _debug(args, kwargs)
            print_row_errors(exc.errors, exc.total_bad)
            if exc.total_bad > 1:  # one input error is one line; several get a total
                _line(f"{exc.total_bad} bad rows; nothing was written")
            raise typer.Exit(2) from exc
        except FeedrankError as exc:
            _debug(args, kwargs)
            _line(f"error: {exc}")
            raise typer.Exit(2) from exc

    return wrapper  # type: ignore[return-value]


def _debug(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    ctx = kwargs.get("ctx") or next((a for a in args if isinstance(a, typer.Context)), None)
    if ctx is not None and ctx_obj(ctx).debug:
        traceback.print_exc()


def _line(text: str) -> None:
    """One line on stderr as it is: no markup, no wrapping (a path or a value may hold '[')."""
    err_console.print(text, markup=False, highlight=False, soft_wrap=True)


def print_row_errors(errors: list[RowError], total: int, shown: int = 10) -> None:
    """One unwrapped `FILE:LINE: field: message` line per bad row, so they can be grepped."""
    for e in errors[:shown]:
        _line(e.located())
    if total > shown:
        _line(f"... and {total - shown} more bad rows")


@contextmanager
def progress_bar(label: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr when it is a terminal; silent otherwise."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
        disable=not err_console.is_terminal,
    )
    with progress:
        task = progress.add_task(label, total=total)
        yield lambda n: progress.advance(task, n)


@contextmanager
def steps(label: str) -> Iterator[Callable[[str], None]]:
    """A spinner naming the current step (on a terminal): long work is never silent."""
    with err_console.status(label) as status:
        yield lambda what: status.update(f"{label}: {what}")


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return str(v)


def print_frame(df: pl.DataFrame, title: str | None = None, max_rows: int = 50) -> None:
    """A table on a terminal; when stdout is piped, every row as tab-separated values with a
    header (the title as a '#' line), nothing wrapped, rounded or cut."""
    if not console.is_terminal:
        if title:
            sys.stdout.write(f"# {title}\n")
        sys.stdout.write(df.write_csv(separator="\t"))
        sys.stdout.flush()
        return
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_lines=False)
    for c in df.columns:
        table.add_column(c, justify="right" if df.schema[c].is_numeric() else "left")
    for row in df.head(max_rows).iter_rows():
        table.add_row(*[_cell(v) for v in row])
    console.print(table)
    if df.height > max_rows:
        console.print(f"... {df.height - max_rows} more rows")


def print_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """name=value pairs; values are read as JSON when they parse (numbers, true, lists), else text."""
    out: dict[str, Any] = {}
    for p in pairs:
        if "=" not in p:
            raise FeedrankError(f"--param must be name=value; got '{p}'")
        key, raw = (x.strip() for x in p.split("=", 1))
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def parse_pairs(text: str, option: str) -> dict[str, str]:
    """'a=b,c=d' -> {'a': 'b', 'c': 'd'} (for --map-type)."""
    out = {}
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        if "=" not in part:
            raise FeedrankError(f"{option} must be a comma list of from=to; got '{part}'")
        src, dst = (x.strip() for x in part.split("=", 1))
        if not src or not dst:
            raise FeedrankError(f"{option} must be a comma list of from=to; got '{part}'")
        out[src] = dst
    return out
