"""The rules options every serving command takes, with the names and meaning of HTTP's
(serving.rules): --filter, --exclude, --include, --boost, --max-per, --offset."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from feedrank.serving.rules import Rules

FILTER = typer.Option(
    None,
    "--filter",
    help="field=value (repeat: one field's values are OR-ed, fields AND-ed; a list attribute "
    "matches when it contains the value), price<50, created_at>=2026-01-01, age<30d.",
)
EXCLUDE = typer.Option(None, "--exclude", help="Item ids never to return (ID,ID; repeatable).")
INCLUDE = typer.Option(None, "--include", help="Only these item ids (ID,ID; repeatable).")
BOOST = typer.Option(None, "--boost", help="field=value:factor multiplies matching scores.")
MAX_PER = typer.Option(None, "--max-per", help="field=n: at most n items per value.")
OFFSET = typer.Option(0, "--offset", min=0, help="Skip this many (pages).")


def rules_from(
    filter: list[str] | None,
    exclude: list[str] | None,
    include: list[str] | None,
    boost: list[str] | None,
    max_per: list[str] | None,
    offset: int,
    exclude_seen: bool = True,
) -> Rules:
    from feedrank.serving.rules import Rules

    return Rules.parse(
        filter or [], exclude or [], include, boost or [], max_per or [], offset, exclude_seen
    )
