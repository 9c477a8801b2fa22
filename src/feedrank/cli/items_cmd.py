"""items hide / unhide: items that must never be served (PUT /items/{id} with `hidden`)."""

from __future__ import annotations

import typer

from feedrank.cli.common import console, ctx_obj, handle_errors

items_app = typer.Typer(help="Items: hide from serving, or show again.", no_args_is_help=True)


def _set_hidden(ctx: typer.Context, ids: list[str], hidden: bool) -> None:
    import polars as pl

    from feedrank.exceptions import NotFoundError

    store = ctx_obj(ctx).store
    wanted = [i for v in ids for i in v.split(",") if i]
    rows = store.items(wanted)
    missing = sorted(set(wanted) - set(rows["item_id"].to_list()))
    if missing:
        raise NotFoundError(f"items must be known item ids; got unknown {missing[:5]}")
    store.upsert_items(rows.with_columns(hidden=pl.lit(hidden)))
    word = "hidden: never served" if hidden else "served again"
    console.print(f"{rows.height} item(s) {word}")


@items_app.command("hide")
@handle_errors
def hide(ctx: typer.Context, ids: list[str] = typer.Argument(..., help="Item ids.")) -> None:
    """Never serve these items (to anyone, by any model or path), from the next request on."""
    _set_hidden(ctx, ids, True)


@items_app.command("unhide")
@handle_errors
def unhide(ctx: typer.Context, ids: list[str] = typer.Argument(..., help="Item ids.")) -> None:
    """Serve these items again."""
    _set_hidden(ctx, ids, False)
