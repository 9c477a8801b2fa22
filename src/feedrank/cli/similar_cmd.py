"""similar: item-to-item ("similar posts"), from any model with an item similarity."""

from __future__ import annotations

import typer

from feedrank.cli.common import console, ctx_obj, handle_errors, print_frame, print_json
from feedrank.cli.model_cmds import MODEL_OPT, load_service


def register(app: typer.Typer) -> None:
    @app.command()
    @handle_errors
    def similar(
        ctx: typer.Context,
        item: str = typer.Argument(..., help="The item to find neighbours of."),
        model: str | None = MODEL_OPT,
        k: int = typer.Option(10, "--k", min=1, help="Items to list."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Items most similar to ITEM, with scores (itemknn, als, bpr, ease, content models)."""
        import polars as pl

        c = ctx_obj(ctx)
        service, label = load_service(c, model)
        sim = service.scorer.similar_items([item], k)
        items = service.view.catalogue.items
        if "title" in items.columns:
            sim = sim.join(
                items.select(pl.col("item_id").alias("similar_item_id"), "title"),
                on="similar_item_id",
                how="left",
                maintain_order="left",
            )
        if as_json:
            print_json({"item_id": item, "model": label, "items": sim.drop("item_id").to_dicts()})
            return
        console.print(f"[bold]{item}[/bold] ({label})")
        print_frame(sim.drop("item_id"))
