"""evaluate: models side by side on a printed split, with popularity, by segment; ctr: what
served recommendations earned online."""

from __future__ import annotations

import typer

from feedrank.cli.common import (
    console,
    ctx_obj,
    handle_errors,
    print_frame,
    print_json,
    steps,
)
from feedrank.cli.model_cmds import MODEL_KINDS


def register(app: typer.Typer) -> None:
    @app.command()
    @handle_errors
    def evaluate(
        ctx: typer.Context,
        model: list[str] = typer.Option(
            ["glm"], "--model", help=f"Model kinds to compare (repeatable): {MODEL_KINDS}."
        ),
        split: str = typer.Option("temporal", "--split", help="temporal | last | loo."),
        test_days: float = typer.Option(
            7.0, "--test-days", help="temporal: the held-out last days."
        ),
        n: int = typer.Option(1, "--n", help="last: items hidden per user."),
        seed: int = typer.Option(0, "--seed", help="loo: the hold-out's seed."),
        k: int = typer.Option(10, "--k", min=1, help="Cut-off of the ranking metrics."),
        sampled: int | None = typer.Option(
            None,
            "--sampled",
            min=1,
            help="Also the sampled-negatives protocol: each held-out item ranked among N random unseen items.",
        ),
        segment_by: str | None = typer.Option(
            None, "--segment-by", help="Comma list: tenure, activity, or user/item attributes."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Fit each model on the split's training part, rank the full catalogue for every
        evaluated user, and report ranking, beyond-accuracy and (where a model gives them)
        probability metrics beside popularity."""
        import polars as pl

        from feedrank.evaluation.offline import evaluate as run
        from feedrank.evaluation.offline import sampled_metrics, user_segments
        from feedrank.evaluation.splits import make_split
        from feedrank.models import make
        from feedrank.pipeline.train import require_engagements

        c = ctx_obj(ctx)
        kinds = list(dict.fromkeys([*model, "popularity"]))
        models = {m: make(m) for m in kinds}
        data = c.site()
        require_engagements(data, c.settings)
        s = make_split(data, c.settings, split, test_days, n=n, seed=seed)
        with steps("fitting and ranking") as step:
            result = run(models, s, c.settings, k, step)
        samp = (
            {
                name: sampled_metrics(m.at(s.view(c.settings)), s, c.settings, sampled, k, seed)
                for name, m in result.models.items()
            }
            if sampled
            else None
        )
        segs = (
            user_segments(s, c.settings, [x.strip() for x in segment_by.split(",")])
            if segment_by
            else None
        )
        by_segment = result.by_segment(segs) if segs is not None else None
        if as_json:
            print_json(
                {
                    "split": s.description,
                    "k": k,
                    "models": result.table().to_dicts(),
                    "segments": by_segment.to_dicts() if by_segment is not None else None,
                    "sampled": {"negatives": sampled, "metrics": samp} if samp else None,
                }
            )
            return
        console.print(f"[bold]split[/bold]: {s.description}", highlight=False, soft_wrap=True)
        print_frame(
            result.table(), f"ranking @{k} (mean over users), beyond accuracy, probabilities"
        )
        if by_segment is not None:
            print_frame(by_segment, "by segment", max_rows=200)
        if samp:
            rows = [{"model": m, **v} for m, v in samp.items()]
            print_frame(
                pl.DataFrame(rows),
                f"SAMPLED protocol ({sampled} random unseen negatives per held-out item): easier than "
                "full ranking, not comparable with the table above",
            )

    @app.command()
    @handle_errors
    def ctr(
        ctx: typer.Context,
        by: str = typer.Option(
            "model",
            "--by",
            help="The impression context field that names what served: model, variant, ...",
        ),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """What served recommendations earned online: impressions, clicks and CTR per served
        model (the impressions' context field `--by`) and position, and the mean value of the
        engagements that followed (watch or listening time) where events carry one."""
        from feedrank.evaluation.online import served_ctr

        c = ctx_obj(ctx)
        table = served_ctr(c.site().events, c.settings, tag=by)
        if as_json:
            print_json(table.to_dicts())
            return
        print_frame(table, f"click-through by {by} and position", max_rows=500)
