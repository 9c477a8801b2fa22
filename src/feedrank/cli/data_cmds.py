"""import, settings, stats, insights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from feedrank.cli.common import (
    console,
    ctx_obj,
    err_console,
    handle_errors,
    parse_pairs,
    print_frame,
    print_json,
    print_row_errors,
    progress_bar,
)
from feedrank.exceptions import FeedrankError, RowError, ValidationError

import_app = typer.Typer(
    help="Import users, items or interactions from CSV, JSON Lines or Parquet.",
    no_args_is_help=True,
)
settings_app = typer.Typer(
    help="The settings stored with the data: event types, weights, what counts as an engagement.",
    no_args_is_help=True,
)

FILE = typer.Argument(..., exists=False, help="CSV (header row), JSON Lines or Parquet file.")
FORMAT = typer.Option(None, "--format", help="csv | jsonl | parquet (default: from the extension).")
MAP = typer.Option([], "--map", help="Rename a column: src=dst (repeatable).")
STRICT = typer.Option(False, "--strict", help="Write nothing when any row is bad.")
NO_HEADER = typer.Option(
    None, "--no-header", help="The CSV has no header row: its column names, comma-separated."
)


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
    ctx: typer.Context,
    kind: str,
    path: Path,
    fmt: str | None,
    mapping: list[str],
    strict: bool,
    no_header: str | None,
    map_type: str | None = None,
) -> None:
    from feedrank.io import import_frame, map_types, read_table

    c = ctx_obj(ctx)
    columns = [x.strip() for x in no_header.split(",")] if no_header else None
    df, first_line = read_table(path, fmt, _parse_map(mapping), columns)
    df = map_types(df, parse_pairs(map_type, "--map-type") if map_type else {})
    with progress_bar(f"importing {kind}", total=df.height) as advance:
        report = import_frame(
            c.store,
            kind,  # type: ignore[arg-type]
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
    if report.redacted:
        console.print(
            f"{report.redacted} personal values dropped (e-mail, phone, precise location; "
            "exact ages are kept as bands)"
        )
    if report.types:
        _type_summary(ctx, report.types, report.engagements)
    if report.bad:
        print_row_errors(report.errors, report.bad)
        raise typer.Exit(1)


def _type_summary(ctx: typer.Context, types: dict[str, int], engagements: int) -> None:
    """Per event type: how many, its weight, whether it counts as an engagement — and a loud
    line when nothing does."""
    import polars as pl

    c = ctx_obj(ctx)
    rows = c.settings.describe_types(types)
    print_frame(pl.DataFrame(rows), "event types in this file (under the current settings)")
    total = sum(types.values())
    console.print(f"{engagements} of {total} events count as engagements")
    if engagements == 0:
        err_console.print(
            "warning: none of these events counts as an engagement, so models will have nothing "
            "to learn from; give their types a weight > 0, list them in engagement_types, or "
            "lower rating_threshold in a settings file (`feedrank settings import FILE.toml`)",
            highlight=False,
            soft_wrap=True,
        )


_DESCRIPTIONS: dict[str, str] = {
    "users": "Users: user_id plus any attributes (age, gender, country, ...).",
    "items": "Items: item_id [, created_at] plus any attributes (content_type, lang, author, title, ...).",
    "interactions": "Interactions: user_id, item_id, type, timestamp [, event_id, value, position, "
    "device, ...].",
}


def _import_command(kind: str) -> None:
    """One `feedrank import KIND FILE` command; the three kinds differ only in what they read."""
    if kind == "interactions":

        @handle_errors
        def command(
            ctx: typer.Context,
            path: Path = FILE,
            fmt: str | None = FORMAT,
            mapping: list[str] = MAP,
            strict: bool = STRICT,
            no_header: str | None = NO_HEADER,
            map_type: str | None = typer.Option(
                None,
                "--map-type",
                help="Rename event types on the way in: from=to, comma-separated "
                "(e.g. pv=page_view,fav=favorite,buy=purchase,cart=add_to_cart).",
            ),
        ) -> None:
            _import(ctx, kind, path, fmt, mapping, strict, no_header, map_type)

    else:

        @handle_errors
        def command(  # type: ignore[misc]
            ctx: typer.Context,
            path: Path = FILE,
            fmt: str | None = FORMAT,
            mapping: list[str] = MAP,
            strict: bool = STRICT,
            no_header: str | None = NO_HEADER,
        ) -> None:
            _import(ctx, kind, path, fmt, mapping, strict, no_header)

    command.__doc__ = _DESCRIPTIONS[kind]
    import_app.command(kind)(command)


for _kind in _DESCRIPTIONS:
    _import_command(_kind)


@settings_app.command("import")
@handle_errors
def settings_import(
    ctx: typer.Context, path: Path = typer.Argument(..., help="A TOML settings file.")
) -> None:
    """Store these settings with the data (a new version); every later command uses them."""
    from feedrank.settings import Settings

    c = ctx_obj(ctx)
    new = Settings.from_file(path)
    diff = c.stored_settings.diff(new)
    version = c.store.put_settings(new.to_dict())
    console.print(f"settings version {version} stored from {path.name}")
    for line in diff:
        console.print(f"  {line}", highlight=False, soft_wrap=True)


@settings_app.command("show")
@handle_errors
def settings_show(
    ctx: typer.Context,
    version: int | None = typer.Option(
        None, "--version", help="A stored version (default: the newest)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The stored settings (the defaults when none were stored), and the stored versions."""
    from feedrank.settings import Settings

    c = ctx_obj(ctx)
    stored = c.store.stored_settings(version)
    s = Settings.from_dict(stored) if stored else Settings()
    versions = [{"version": v, "stored_at": t.isoformat()} for v, t in c.store.settings_versions()]
    if as_json:
        print_json({"settings": s.to_dict(), "versions": versions, "stored": stored is not None})
        return
    if stored is None:
        console.print("no settings stored: the defaults apply")
    for key, value in s.to_dict().items():
        console.print(f"{key} = {value!r}", highlight=False, soft_wrap=True)
    if versions:
        console.print(
            "versions: " + ", ".join(f"{v['version']} ({v['stored_at']})" for v in versions)
        )


def register(app: typer.Typer) -> None:
    app.add_typer(settings_app, name="settings")

    @app.command()
    @handle_errors
    def stats(
        ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")
    ) -> None:
        """Counts of users, items and interactions per type (and what each counts as), the
        events' time span, trained models and the active score generation."""
        c = ctx_obj(ctx)
        s: dict[str, Any] = c.store.stats()
        s["types"] = c.settings.describe_types(s["events_per_type"])
        s["models"] = [
            {"name": r.name, "version": r.version, "kind": r.kind} for r in c.registry.list()
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
        import polars as pl

        console.print(f"store: {s['store']}")
        console.print(
            f"users: {s['users']} profiles, {s['users_with_events']} with events   "
            f"items: {s['items']}   interactions: {s['events']}"
        )
        console.print(f"time span: {s['first_event']} .. {s['last_event']}")
        if s.get("events_out_of_time_range"):
            err_console.print(
                f"warning: {s['events_out_of_time_range']} events lie outside the settings' "
                "time_range (stored by an older version; read back at the range's edge)",
                highlight=False,
                soft_wrap=True,
            )
        if s["types"]:
            print_frame(pl.DataFrame(s["types"]), "event types")
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
    def erase(
        ctx: typer.Context, user_id: str = typer.Argument(..., help="The user to erase.")
    ) -> None:
        """Erase a user everywhere: events, profile, counters and recommendations in the store
        (freed bytes zeroed, WAL checkpointed), their rows in model and benchmark files. Running
        servers stop using them within a second."""
        from feedrank.pipeline.erase import erase_user

        c = ctx_obj(ctx)
        removed = erase_user(c.store, c.registry, user_id)
        console.print(
            f"erased {user_id}: " + ", ".join(f"{n} {what}" for what, n in removed.items()),
            highlight=False,
            soft_wrap=True,
        )

    @app.command()
    @handle_errors
    def export(
        ctx: typer.Context,
        kind: str = typer.Argument(..., help="interactions | users | items"),
        directory: Path = typer.Argument(..., help="A new (or empty) directory."),
        fmt: str = typer.Option("parquet", "--format", help="parquet"),
    ) -> None:
        """Write the store's records as Parquet, for a cluster (docs/spark.md): interactions
        partitioned by day (DIR/day=YYYY-MM-DD/), users and items as one file each."""
        from feedrank.export import export as run

        n = run(ctx_obj(ctx).store, kind, directory, fmt)
        console.print(f"wrote {n} {kind} to {directory}")

    @app.command()
    @handle_errors
    def insights(ctx: typer.Context) -> None:
        """Seed 001's insights: favourite content types and languages per gender and age band,
        most engaged posts per segment, engagement by hour of day."""
        from feedrank.evaluation.insights import all_insights

        c = ctx_obj(ctx)
        tables = all_insights(c.site(), c.settings)
        if not tables:
            raise FeedrankError(
                "no insights: they need engagements with user attributes (gender, age) and item "
                "attributes (content_type, lang); import users and items files"
            )
        for title, df in tables.items():
            print_frame(df, title)
