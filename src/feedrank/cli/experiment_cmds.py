"""ab (online experiments) and offpolicy (estimates before going online)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import typer

from feedrank.cli.common import console, ctx_obj, handle_errors, print_frame, print_json
from feedrank.data.open_bandit import CAMPAIGNS, default_root, item_count, load_log
from feedrank.evaluation.offpolicy import compare, ips, observed_rate, snips
from feedrank.exceptions import ConfigError
from feedrank.experiments.ab import Experiment, report

ab_app = typer.Typer(
    help="Online A/B tests: assign users to variants, report CTR and return rates.",
    no_args_is_help=True,
)


def _experiment(name: str, variants: list[str]) -> Experiment:
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
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """CTR per variant with 95% intervals and a two-proportion test, and 7- and 14-day return
    rates of exposed users (churn = 1 - return)."""
    c = ctx_obj(ctx)
    rep = report(c.store.load().events, experiment, c.settings)
    if as_json:
        print_json(rep.to_dict())
        return
    print_frame(
        rep.ctr, f"experiment {experiment}: click-through per variant (Wilson 95% intervals)"
    )
    if rep.p_value is not None:
        console.print(f"two-proportion z test (first two variants): p = {rep.p_value:.4g}")
    print_frame(rep.returns, "return rate of exposed users (share back within N days)")


def register(app: typer.Typer) -> None:
    app.add_typer(ab_app, name="ab")

    @app.command()
    @handle_errors
    def offpolicy(
        data: Path = typer.Option(
            None, "--data", help="Open Bandit directory (default: ../shared/data/open-bandit)."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Check the off-policy estimators on the Open Bandit Dataset: the uniform-random
        policy's CTR estimated (IPS, SNIPS) from the Thompson-sampling log, beside the CTR the
        random policy actually got in its own log, per campaign."""
        root = data or default_root()
        rows = []
        for campaign in CAMPAIGNS:
            bts, rand = load_log("bts", campaign, root), load_log("random", campaign, root)
            target = np.full(bts.height, 1 / item_count(campaign, root))
            observed = observed_rate(rand["click"].to_numpy())
            for est in (
                ips(bts["click"].to_numpy(), target, bts["propensity_score"].to_numpy()),
                snips(bts["click"].to_numpy(), target, bts["propensity_score"].to_numpy()),
            ):
                rows.append(
                    {
                        "campaign": campaign,
                        "method": est.method,
                        "estimate": est.value,
                        "ci_low": est.ci_low,
                        "ci_high": est.ci_high,
                        "effective_n": est.effective_n,
                        "random_log_ctr": observed.value,
                        "random_ci_low": observed.ci_low,
                        "random_ci_high": observed.ci_high,
                        **compare(est, observed),
                    }
                )
        table = pl.DataFrame(rows)
        if as_json:
            print_json(table.to_dicts())
            return
        print_frame(
            table.select(
                "campaign",
                "method",
                "estimate",
                "ci_low",
                "ci_high",
                "effective_n",
                "random_log_ctr",
                "random_ci_low",
                "random_ci_high",
            ),
            "uniform-random policy: estimated from the Thompson-sampling log vs observed (95% intervals)",
        )
        print_frame(
            table.select(
                "campaign",
                "method",
                "estimate_in_observed_ci",
                "observed_in_estimate_ci",
                "difference_p_value",
            ),
            "agreement",
        )
