"""similar and rerank: item-to-item ("similar posts") and ordering a supplied list, with the
rules and the answers of the HTTP API."""

from __future__ import annotations

import typer

from feedrank.cli import rules_opts
from feedrank.cli.common import ctx_obj, handle_errors, print_json
from feedrank.cli.model_cmds import MODEL_OPT, load_service, print_answers


def register(app: typer.Typer) -> None:
    @app.command()
    @handle_errors
    def similar(
        ctx: typer.Context,
        item: str = typer.Argument(..., help="The item to find neighbours of."),
        model: str | None = MODEL_OPT,
        k: int = typer.Option(10, "--k", min=1, help="Items to list."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        filter: list[str] | None = rules_opts.FILTER,
        exclude: list[str] | None = rules_opts.EXCLUDE,
        include: list[str] | None = rules_opts.INCLUDE,
        boost: list[str] | None = rules_opts.BOOST,
        max_per: list[str] | None = rules_opts.MAX_PER,
        offset: int = rules_opts.OFFSET,
    ) -> None:
        """Items most similar to ITEM: the model's item similarity (itemknn, als, bpr, ease,
        content, ...), or for the GLM what it recommends to a visitor whose only event is
        ITEM."""
        from feedrank.serving.ranking import items_out
        from feedrank.serving.rerank import similar as similar_items

        c = ctx_obj(ctx)
        rules = rules_opts.rules_from(filter, exclude, include, boost, max_per, offset)
        service, label = load_service(c, model)
        kind, ans = similar_items(service, item, k, rules)
        out = {
            "item_id": item,
            "model": label,
            "similarity": kind,
            "similar": items_out(ans.recs.to_dicts(), None, ans.boosts),
            "rules": ans.applied,
        }
        if as_json:
            print_json(out)
            return
        print_answers(
            c, [{**out, "user_id": f"like {item} ({kind})", "items": out["similar"]}], False
        )

    @app.command()
    @handle_errors
    def rerank(
        ctx: typer.Context,
        user: str = typer.Argument(..., help="The user to order the items for."),
        items: str = typer.Option(..., "--items", help="The item ids to order (I1,I2,...)."),
        model: str | None = MODEL_OPT,
        boost: list[str] | None = rules_opts.BOOST,
        explain: bool = typer.Option(False, "--explain", help="Each item's reasons."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Exactly ITEMS, ordered for USER, with scores; unknown items are kept, last, marked."""
        from feedrank.serving.rerank import rerank as rerank_items
        from feedrank.serving.rules import Rules

        c = ctx_obj(ctx)
        service, label = load_service(c, model)
        out = {
            "model": label,
            **rerank_items(
                service, user, items.split(","), Rules.parse(boost=boost or []), explain
            ),
        }
        if as_json:
            print_json(out)
            return
        print_answers(c, [out], explain)
