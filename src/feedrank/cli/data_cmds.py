"""import, stats, insights."""

from __future__ import annotations

from pathlib import Path

import typer

from feedrank.cli.common import (
    console,
    ctx_obj,
    handle_errors,
    print_frame,
    print_json,
    print_row_errors,
    progress_bar,
)
from feedrank.data.insights import all_insights
from feedrank.data.io import Kind, import_frame, read_table
from feedrank.exceptions import RowError, ValidationError

import_app = typer.Typer(
    help="Import users, items or interactions from CSV, JSON Lines or Parquet.",
    no_args_is_help=True,
)

FILE = typer.Argument(..., exists=False, help="CSV (header row), JSON Lines or Parquet file.")
FORMAT = typer.Option(None, "--format", help="csv | jsonl | parquet (default: from the extension).")
MAP = typer.Option([], "--map", help="Rename a column: src=dst (repeatable).")
STRICT = typer.Option(False, "--strict", help="Write nothing when any row is bad.")


def _parse_map(pairs: list[str]) -> dict[str, str]:
    out = {}
    for i, p in enumerate(pairs):
        if "=" not in p:
            raise ValidationError(
                [RowError(None, "--map", f"--map must be src=dst; got '{p}' (option {i + 1})")]
            )
        src, dst = p.split("=", 1)
        out[src.strip()] = dst.strip()
    return out


def _import(
    ctx: typer.Context, kind: Kind, path: Path, fmt: str | None, mapping: list[str], strict: bool
) -> None:
    c = ctx_obj(ctx)
    rename = _parse_map(mapping)
    df, first_line = read_table(path, fmt, rename)
    with progress_bar(f"importing {kind}", total=df.height) as advance:
        report = import_frame(
            c.store,
            kind,
            df,
            c.settings,
            source=path.name,
            first_line=first_line,
            strict=strict,
            progress=advance,
        )
    console.print(
        f"{kind}: {report.rows} rows read, {report.written} written, "
        f"{report.duplicates} already stored, {report.bad} bad ({path.name})"
    )
    if report.bad:
        print_row_errors(report.errors, report.bad)
        raise typer.Exit(1)


_DESCRIPTIONS: dict[Kind, str] = {
    "users": "Users: user_id plus any attributes (age, gender, country, ...).",
    "items": "Items: item_id, created_at plus any attributes (content_type, lang, author, title, ...).",
    "interactions": "Interactions: user_id, item_id, type, timestamp [, event_id, value, position, "
    "device, ...].",
}


def _import_command(kind: Kind) -> None:
    """One `feedrank import KIND FILE` command; the three kinds differ only in what they read."""

    @handle_errors
    def command(
        ctx: typer.Context,
        path: Path = FILE,
        fmt: str | None = FORMAT,
        mapping: list[str] = MAP,
        strict: bool = STRICT,
    ) -> None:
        _import(ctx, kind, path, fmt, mapping, strict)

    command.__doc__ = _DESCRIPTIONS[kind]
    import_app.command(kind)(command)


for _kind in _DESCRIPTIONS:
    _import_command(_kind)


def register(app: typer.Typer) -> None:
    @app.command()
    @handle_errors
    def stats(
        ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")
    ) -> None:
        """Counts of users, items and interactions per type, the events' time span, trained models
        and the active score generation."""
        c = ctx_obj(ctx)
        s = c.store.stats()
        s["models"] = [
            {"name": r.name, "version": r.version, "kind": r.kind, "path": str(r.path)}
            for r in c.registry.list()
        ]
        active = c.store.active_generation()
        s["active_generation"] = (
            {
                "id": active.id,
                "model": active.model,
                "created_at": active.created_at.isoformat(),
                "users": active.n_users,
                "rows": active.n_rows,
            }
            if active
            else None
        )
        if as_json:
            print_json(s)
            return
        console.print(f"store: {s['store']}")
        console.print(f"users: {s['users']}   items: {s['items']}   interactions: {s['events']}")
        console.print(f"time span: {s['first_event']} .. {s['last_event']}")
        for t, n in s["events_per_type"].items():
            console.print(f"  {t:<16} {n}")
        console.print(
            "models: " + (", ".join(f"{m['name']}/{m['version']}" for m in s["models"]) or "none")
        )
        g = s["active_generation"]
        console.print(
            f"active generation: {g['id']} ({g['model']}, {g['users']} users, {g['created_at']})"
            if g
            else "active generation: none"
        )

    @app.command()
    @handle_errors
    def insights(ctx: typer.Context) -> None:
        """Seed 001's insights: favourite content types and languages per gender and age band,
        most engaged posts per segment, engagement by hour of day."""
        c = ctx_obj(ctx)
        tables = all_insights(c.store.load(), c.settings)
        if not tables:
            console.print("no engagement with user and item attributes to summarise yet")
        for title, df in tables.items():
            print_frame(df, title)
