"""feedrank demo: a synthetic website with a known truth, end to end on the store."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import typer

from feedrank.cli import clickstream_cmd
from feedrank.cli.common import console, ctx_obj, handle_errors, print_frame, progress_bar, steps
from feedrank.cli.model_cmds import show_training

if TYPE_CHECKING:
    import polars as pl

    from feedrank.datasets.demo import DemoSite
    from feedrank.settings import Settings
    from feedrank.views.site import SiteData


def register(app: typer.Typer) -> None:
    # `feedrank demo` (the synthetic site) stays as it was; `feedrank demo clickstream` is seed
    # 004's real data (cli/clickstream_cmd.py).
    demo_app = typer.Typer(context_settings={"help_option_names": ["-h", "--help"]})
    app.add_typer(demo_app, name="demo")
    clickstream_cmd.register(demo_app)

    @demo_app.callback(invoke_without_command=True)
    @handle_errors
    def demo(
        ctx: typer.Context,
        users: int = typer.Option(2000, "--users", min=50, help="Synthetic users."),
        items: int = typer.Option(400, "--items", min=20, help="Synthetic posts."),
        days: int = typer.Option(28, "--days", min=7, help="Days of activity."),
        test_days: float = typer.Option(7.0, "--test-days", help="Held-out last days."),
        seed: int = typer.Option(0, "--seed", help="Random seed of the site."),
        show_users: int = typer.Option(
            3, "--show-users", help="Users whose recommendations are printed."
        ),
        logging_policy: str = typer.Option(
            "recency",
            "--logging-policy",
            help="How the site drew its slates: recency, or uniform (random slates with exact "
            "propensities; then the GLM's CTR is also estimated off-policy beside the truth).",
        ),
    ) -> None:
        """Generate a synthetic website with a known click model, import it, train the GLM on all
        but the last days, evaluate on them beside popularity, score every user, and show
        recommendations with reasons. `feedrank demo clickstream`: seed 004's real data."""
        if ctx.invoked_subcommand is not None:
            return
        import polars as pl

        from feedrank.datasets.demo import generate_site
        from feedrank.io import import_frame
        from feedrank.pipeline.score import score_all, serving
        from feedrank.pipeline.train import train
        from feedrank.serving.service import reason_text

        c = ctx_obj(ctx)
        t0 = time.perf_counter()
        site = generate_site(
            n_users=users, n_items=items, days=days, seed=seed, logging_policy=logging_policy
        )
        console.print(
            f"[bold]1. generated[/bold] {site.users.height} users, {site.items.height} posts, "
            f"{site.events.height} events ({site.start:%Y-%m-%d} .. {site.end:%Y-%m-%d}, seed {seed})"
        )
        sources: tuple[tuple[str, pl.DataFrame], ...] = (
            ("users", site.users),
            ("items", site.items),
            ("interactions", site.events),
        )
        for kind, frame in sources:
            with progress_bar(f"importing {kind}", total=frame.height) as advance:
                report = import_frame(
                    c.store,
                    kind,  # type: ignore[arg-type]
                    frame,
                    c.settings,
                    source=f"demo {kind}",
                    strict=True,
                    progress=advance,
                )
            console.print(
                f"   imported {kind}: {report.written} new, {report.duplicates} already stored"
            )
        data = c.site()
        console.print(f"[bold]2. training[/bold] the GLM on all but the last {test_days:g} days")
        with steps("training glm") as step:
            result = train(data, c.settings, "glm", test_days=test_days, progress=step)
        show_training(result, top=25)
        _compare_truth(result.model.coef_table(), site.truth.position_effect)  # type: ignore[attr-defined]
        rec = c.registry.save(
            result.model,
            "glm",
            {
                "split": result.split,
                "metrics": result.metrics(),
                **result.diagnostics(c.settings),
            },
            fallback=result.fallback,
        )
        c.registry.promote(f"{rec.name}/{rec.version}", "the demo's model")
        console.print(f"   saved {rec.name}/{rec.version} (champion)")
        console.print("[bold]3. scoring[/bold] every user (top 100, seen items excluded)")
        label = f"{rec.name}/{rec.version}"
        n_users = site.users.height
        with progress_bar("scoring users", total=n_users) as advance:
            gen, recs = score_all(c.store, result.model, label, result.fallback, 100, True, advance)
        console.print(
            f"   generation {gen} active: {recs.height} rows for {recs['user_id'].n_unique()} users"
        )
        console.print("[bold]4. recommendations[/bold] with reasons")
        service = serving(c.store, result.model, result.fallback)
        titles = dict(site.items.select("item_id", "title").iter_rows())
        user_ids = site.users["user_id"].to_list()
        for u in user_ids[:show_users]:
            top = service.recommend([u], 5)
            why = service.explain(top)
            print_frame(
                top.select("rank", "item_id", pl.col("score").round(4), "source").with_columns(
                    title=pl.Series([titles.get(i, "") for i in top["item_id"]], dtype=pl.String),
                    why=pl.Series([reason_text(r) for r in why], dtype=pl.String),
                ),
                f"{u}",
            )
        if logging_policy == "uniform":
            _offpolicy_against_truth(site, data, c.settings, test_days)
        store = f"--store {c.store_url} "
        console.print(
            f"done in {time.perf_counter() - t0:.1f}s. Next: `feedrank {store}recommend "
            f"{user_ids[0]} --explain`, `feedrank {store}insights`, `feedrank {store}stats`.",
            highlight=False,
            soft_wrap=True,
        )


def _offpolicy_against_truth(
    site: DemoSite, data: SiteData, settings: Settings, test_days: float
) -> None:
    """What the GLM and popularity would have earned on the held-out random slates: estimated
    off-policy from the log, beside the truth the simulator knows."""
    import polars as pl

    from feedrank.evaluation.offpolicy_models import default_cut, estimate_models, expected_ctr
    from feedrank.models import make
    from feedrank.models.base import Recommender
    from feedrank.views.view import FrameView

    console.print("[bold]5. off-policy[/bold]: each model's CTR had it served the held-out days")
    cut = default_cut(data, test_days)
    models: dict[str, Recommender] = {"glm": make("glm"), "popularity": make("popularity")}
    rep = estimate_models(models, data, settings, cut)  # fits each model before the cut
    view = FrameView(data.until(cut), settings, cut)
    truth = {
        name: expected_ctr(m.at(view), rep.log, site.click_probability)
        for name, m in models.items()
    }
    table = rep.table().with_columns(
        true_ctr=pl.col("model").replace_strict(truth, return_dtype=pl.Float64)
    )
    console.print(
        f"   {rep.description}; the random slates' own CTR: {rep.logged.value:.4f} "
        f"[{rep.logged.ci_low:.4f}, {rep.logged.ci_high:.4f}]"
    )
    print_frame(
        table.select("model", "policy", "method", "ctr", "ci_low", "ci_high", "true_ctr"),
        "estimated (95% bootstrap) vs the simulator's true CTR of each model's top-k",
    )


def _compare_truth(coefs: pl.DataFrame, truth: dict[int, float]) -> None:
    """The site's true position effects beside the GLM's (relative to position 1)."""
    import numpy as np
    import polars as pl

    got = {
        int(f.split("=")[1]): v
        for f, v in coefs.select("feature", "coefficient").iter_rows()
        if f.startswith("position=") and f.split("=")[1].isdigit()
    }
    if 1 not in got:
        return
    rows = [(p, truth[p], got[p] - got[1]) for p in sorted(truth) if p in got]
    frame = pl.DataFrame(rows, schema=["position", "true effect", "GLM estimate"], orient="row")
    corr = (
        float(np.corrcoef(frame["true effect"], frame["GLM estimate"])[0, 1])
        if frame.height > 2
        else float("nan")
    )
    print_frame(frame, f"known truth: position effects vs the GLM's (correlation {corr:.3f})")
