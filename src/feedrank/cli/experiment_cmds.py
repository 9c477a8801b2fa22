"""ab (online experiments) and offpolicy (estimates before going online)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from feedrank.cli.common import (
    console,
    ctx_obj,
    err_console,
    handle_errors,
    print_frame,
    print_json,
    steps,
)
from feedrank.cli.model_cmds import MODEL_KINDS
from feedrank.exceptions import ConfigError

if TYPE_CHECKING:
    from feedrank.experiments.ab import Experiment

ab_app = typer.Typer(
    help="Online A/B tests: assign users to variants, report CTR and return rates.",
    no_args_is_help=True,
)


def _experiment(name: str, variants: list[str]) -> Experiment:
    from feedrank.experiments.ab import Experiment

    shares = {}
    for v in variants:
        if "=" not in v:
            raise ConfigError(f"--variant must be name=share; got '{v}'")
        key, share = v.split("=", 1)
        try:
            shares[key.strip()] = float(share)
        except ValueError as exc:
            raise ConfigError(f"--variant share must be a number; got '{share}' in '{v}'") from exc
    return Experiment(name, shares)


@ab_app.command("assign")
@handle_errors
def assign(
    experiment: str = typer.Argument(..., help="Experiment name."),
    users: list[str] = typer.Argument(..., help="User ids."),
    variant: list[str] = typer.Option(
        ..., "--variant", help="name=share (repeatable; shares sum to 1)."
    ),
) -> None:
    """The variant of each user: a pure function of (experiment, user), the same everywhere."""
    exp = _experiment(experiment, variant)
    for u, v in zip(users, exp.assign(users), strict=True):
        typer.echo(f"{u}\t{v}")


@ab_app.command("report")
@handle_errors
def ab_report(
    ctx: typer.Context,
    experiment: str = typer.Argument(
        ..., help="Experiment name, as carried in impressions' context."
    ),
    effect: float = typer.Option(
        0.2,
        "--effect",
        min=0.0,
        help="The relative CTR difference the always-valid p-value finds soonest (it stays "
        "valid for any value).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """CTR per variant with 95% intervals, the difference's p-value (users are the unit:
    delta method) both fixed-horizon and always valid (safe to look every day and stop), and
    7- and 14-day return rates of exposed users (churn = 1 - return)."""
    from feedrank.experiments.ab import report

    c = ctx_obj(ctx)
    rep = report(c.site().events, experiment, c.settings, effect)
    if as_json:
        print_json(rep.to_dict())
        return
    print_frame(
        rep.ctr,
        f"experiment {experiment}: click-through per variant (95% intervals over users)",
    )
    if rep.looks is not None:
        print_frame(rep.looks, "the difference day by day (second variant minus first)")
        console.print(
            f"p = {rep.p_value:.4g} if today's look was fixed in advance; always-valid "
            f"p = {rep.p_always_valid:.4g} (valid however often the test was looked at)"
        )
    print_frame(rep.returns, "return rate of exposed users (share back within N days)")


offpolicy_app = typer.Typer(
    help="Off-policy estimates: what a model would have earned, from logged impressions.",
    no_args_is_help=True,
)


@offpolicy_app.command("estimate")
@handle_errors
def offpolicy_estimate(
    ctx: typer.Context,
    model: list[str] = typer.Option(
        ["glm"], "--model", help=f"Model kinds to estimate (repeatable): {MODEL_KINDS}."
    ),
    test_days: float = typer.Option(
        7.0, "--test-days", help="Estimate on the impressions of the last days; fit before."
    ),
    temperature: float | None = typer.Option(
        None,
        "--temperature",
        help="Serve as softmax (Plackett-Luce) exploration at this temperature, in units of the "
        "user's score spread; default: greedy top-k.",
    ),
    n_sim: int = typer.Option(2000, "--n-sim", min=100, help="Softmax: rankings drawn per user."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap and sampling seed."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Estimate each model's CTR (IPS, SNIPS, DR; 95% intervals resampling users) from the
    logged impressions whose context carries the logging policy's `propensity`, with
    popularity beside and the logging policy's own CTR for reference."""
    from feedrank.evaluation.offpolicy_models import default_cut, estimate_models
    from feedrank.models import make

    c = ctx_obj(ctx)
    models = {m: make(m) for m in dict.fromkeys([*model, "popularity"])}
    data = c.site()
    cut = default_cut(data, test_days)
    with steps(f"fitting and estimating: {', '.join(models)}"):
        rep = estimate_models(models, data, c.settings, cut, temperature, n_sim, seed)
    if as_json:
        print_json(rep.to_dict())
        return
    console.print(f"[bold]split[/bold]: {rep.description}")
    console.print(
        f"logging policy's own CTR: {rep.logged.value:.4g} "
        f"[{rep.logged.ci_low:.4g}, {rep.logged.ci_high:.4g}]"
    )
    print_frame(rep.table(), "estimated CTR had each model served (95% intervals)")
    for p in rep.policies:
        for w in p.weights.warnings:
            err_console.print(f"[yellow]warning[/yellow] {p.model}: {w}", highlight=False)


@offpolicy_app.command("open-bandit")
@handle_errors
def offpolicy_open_bandit(
    data: Path = typer.Option(
        None, "--data", help="Open Bandit directory (default: ../shared/data/open-bandit)."
    ),
    seed: int = typer.Option(0, "--seed", help="Bootstrap and cross-fitting seed."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Check the estimators against reality on the Open Bandit Dataset: the uniform-random
    policy's CTR estimated (IPS, SNIPS, DR) from the Thompson-sampling log, beside the CTR the
    random policy actually got in its own log, per campaign."""
    import polars as pl

    from feedrank.datasets.open_bandit import default_root
    from feedrank.evaluation.offpolicy_check import uniform_policy_check

    rows = uniform_policy_check(data or default_root(), seed=seed)
    if as_json:
        print_json(rows)
        return
    table = pl.DataFrame(rows)
    observed = table.unique("campaign", keep="first", maintain_order=True)
    for r in observed.iter_rows(named=True):
        console.print(
            f"random log, {r['campaign']}: CTR {r['random_log_ctr']:.4g} "
            f"[{r['random_ci_low']:.4g}, {r['random_ci_high']:.4g}] (Wilson 95%)"
        )
    print_frame(
        table.select("campaign", "method", "estimate", "ci_low", "ci_high", "effective_n"),
        "uniform-random policy estimated from the Thompson-sampling log (95% bootstrap)",
    )
    print_frame(
        table.select(
            "campaign",
            "method",
            pl.col("estimate_in_observed_ci").alias("in_random_ci"),
            pl.col("observed_in_estimate_ci").alias("covers_random"),
            pl.col("difference_p_value").alias("p_value"),
            "pass_probability",
        ),
        "agreement; pass_probability: the chance that an exactly unbiased estimator with this "
        "interval lands in the random log's",
    )
    for r in rows:
        if r["method"] == "ips":
            for w in r["warnings"]:
                err_console.print(f"[yellow]warning[/yellow] {r['campaign']}: {w}", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(ab_app, name="ab")
    app.add_typer(offpolicy_app, name="offpolicy")
