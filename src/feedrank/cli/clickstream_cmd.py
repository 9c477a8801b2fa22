"""feedrank demo clickstream: seed 004 end to end on its real data — import into the store,
evaluate every model on a seeded leave-one-out hold-out beside popularity, write the HTML
report, print the comparison table."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from feedrank.cli.common import console, ctx_obj, handle_errors, print_frame
from feedrank.exceptions import FeedrankError

FLOORS = {"HR@10": 0.48, "BU hit rate": 0.35}  # issue 3's floors for the best model


def register(app: typer.Typer) -> None:
    @app.command("clickstream")
    @handle_errors
    def clickstream(
        ctx: typer.Context,
        data: Path | None = typer.Option(
            None,
            "--data",
            help="Directory with submissions.csv and bu_mapping.csv "
            "(default: ../shared/data/clickstream beside the repository).",
        ),
        out: Path = typer.Option(
            Path("clickstream_report.html"), "--out", help="Where to write the HTML report."
        ),
        seed: int = typer.Option(0, "--seed", help="Seed of the leave-one-out split."),
        models: str | None = typer.Option(
            None,
            "--models",
            help="Comma-separated model kinds to evaluate (default: all); popularity is always in.",
        ),
    ) -> None:
        """Seed 004's clickstream recommender on its real data, end to end.

        Import (cookie -> user, form -> item, asset-type weights), evaluate every model on a
        seeded leave-one-out hold-out beside popularity, write the HTML report with the seed's
        plots, print the table."""
        import polars as pl

        from feedrank.datasets.clickstream import (
            clickstream_settings,
            default_clickstream_dir,
            import_clickstream,
        )
        from feedrank.evaluation.clickstream_eval import compare, parse_models
        from feedrank.evaluation.clickstream_report import render_report
        from feedrank.views.site import SiteData

        c = ctx_obj(ctx)
        t0 = time.perf_counter()
        directory = data or default_clickstream_dir()
        if directory is None or not (directory / "submissions.csv").exists():
            raise FeedrankError(
                "--data must be a directory holding submissions.csv and bu_mapping.csv; "
                f"got {directory or 'nothing found at ../shared/data/clickstream'}"
            )
        specs = parse_models(models)
        settings = clickstream_settings(c.stored_settings)
        cs, written = import_clickstream(c.store, directory, settings)
        console.print(f"[bold]1. imported[/bold] {directory} into {c.store_url}")
        console.print(
            "   "
            + ", ".join(f"{k}: {v}" for k, v in cs.summary().items())
            + " | new rows written: "
            + ", ".join(f"{k} {v}" for k, v in written.items())
        )
        # Only this data set's records, whatever else the store holds.
        stored = c.site()
        items = cs.items["item_id"].implode()
        site = SiteData(
            stored.users.filter(pl.col("user_id").is_in(cs.users["user_id"].implode())),
            stored.items.filter(pl.col("item_id").is_in(items)),
            stored.events.filter(pl.col("item_id").is_in(items)),
        )
        console.print(f"[bold]2. evaluating[/bold] {len(specs)} models (split seed {seed})")
        comp = compare(site, settings, seed, specs, progress=lambda n: console.print(f"   {n}"))
        table = comp.table()
        print_frame(
            table.drop("params"),
            f"held-out comparison — {comp.split.description}; split seed {seed}",
        )
        for r in comp.results:
            if r.note:
                console.print(f"   {r.name}: {r.note}", highlight=False)
        if comp.skipped:
            console.print(f"   skipped: {comp.skipped}")
        best = comp.best("HR@10")
        m = best.metrics()
        console.print(
            f"best by HR@10 (split seed {seed}): {best.name}: HR@10 {m['HR@10']:.4f}, "
            f"BU hit rate {m['BU hit rate']:.4f}; popularity HR@10 "
            f"{comp.result('popularity').metrics()['HR@10']:.4f}",
            highlight=False,
        )
        both = [
            r.name
            for r in comp.results
            if all(r.metrics()[k] >= v for k, v in FLOORS.items()) and r.kind != "popularity"
        ]
        console.print(
            f"models meeting both floors (HR@10 >= {FLOORS['HR@10']}, BU hit rate >= "
            f"{FLOORS['BU hit rate']}): {both or 'none'}",
            highlight=False,
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render_report(comp, settings, cs.summary()))
        console.print(
            f"[bold]3. report[/bold] written to {out} ({out.stat().st_size / 1e3:.0f} kB) "
            f"in {time.perf_counter() - t0:.1f}s"
        )
