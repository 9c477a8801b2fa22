"""What every command shares: the context (store URL, models directory, settings), error
handling at the edge, progress bars, and printing frames as tables."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

import polars as pl
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from feedrank.config import Settings
from feedrank.exceptions import FeedrankError, RowError, ValidationError
from feedrank.models import MODELS
from feedrank.models.base import Recommender
from feedrank.pipeline.registry import Registry, models_dir
from feedrank.store import Store, open_store

console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Context:
    store_url: str
    models_dir_option: str | None
    settings: Settings

    @cached_property
    def store(self) -> Store:
        return open_store(self.store_url)

    @cached_property
    def registry(self) -> Registry:
        return Registry(models_dir(self.store_url, self.models_dir_option))


def ctx_obj(ctx: typer.Context) -> Context:
    obj: Context = ctx.find_root().obj
    return obj


def handle_errors(fn: F) -> F:
    """feedrank's own errors become one clear line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ValidationError as exc:
            err_console.print(f"[red]error:[/red] {exc.total_bad} bad row(s); nothing was written")
            print_row_errors(exc.errors, exc.total_bad)
            raise typer.Exit(2) from exc
        except FeedrankError as exc:
            err_console.print(f"[red]error:[/red] {exc}", highlight=False)
            raise typer.Exit(2) from exc

    return wrapper  # type: ignore[return-value]


def print_row_errors(errors: list[RowError], total: int, shown: int = 10) -> None:
    """One unwrapped line per bad row, so they can be grepped."""
    for e in errors[:shown]:
        err_console.print(f"  {e}", markup=False, highlight=False, soft_wrap=True)
    if total > shown:
        err_console.print(f"  ... and {total - shown} more bad rows", soft_wrap=True)


@contextmanager
def progress_bar(label: str, total: int) -> Iterator[Callable[[int], None]]:
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


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return str(v)


def print_frame(df: pl.DataFrame, title: str | None = None, max_rows: int = 50) -> None:
    table = Table(title=title, title_justify="left", show_lines=False)
    for c in df.columns:
        table.add_column(c, justify="right" if df.schema[c].is_numeric() else "left")
    for row in df.head(max_rows).iter_rows():
        table.add_row(*[_cell(v) for v in row])
    console.print(table)
    if df.height > max_rows:
        console.print(f"... {df.height - max_rows} more rows")


def with_popularity(kinds: list[str]) -> dict[str, Recommender]:
    """Fresh models of the named kinds, popularity always beside (the baseline every table
    shows)."""
    unknown = [m for m in kinds if m not in MODELS]
    if unknown:
        raise FeedrankError(f"--model must be among {sorted(MODELS)}; got {unknown}")
    return {m: MODELS[m]() for m in dict.fromkeys([*kinds, "popularity"])}


def print_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))
