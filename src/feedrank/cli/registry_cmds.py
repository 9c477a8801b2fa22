"""models list|show|promote|rollback, and retrain."""

from __future__ import annotations

import json
import time

import polars as pl
import typer

from feedrank.cli.common import console, ctx_obj, handle_errors, print_frame, print_json
from feedrank.exceptions import FeedrankError
from feedrank.pipeline.retrain import RetrainPolicy, retrain

models_app = typer.Typer(
    help="The model registry: every trained model, and the champion that serves.",
    no_args_is_help=True,
)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_interval(text: str) -> float:
    """'30m', '6h', '1d' -> seconds."""
    unit = text[-1:].lower()
    try:
        value = float(text[:-1])
    except ValueError:
        value = -1
    if unit not in _UNITS or value <= 0:
        raise FeedrankError(
            f"--every must be a positive number with a unit among {list(_UNITS)} (e.g. 1d); got '{text}'"
        )
    return value * _UNITS[unit]


@models_app.command("list")
@handle_errors
def list_models(
    ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")
) -> None:
    """Every trained model with its kind, data window, parent and held-out metrics."""
    c = ctx_obj(ctx)
    champion = c.registry.champion()
    rows = []
    for r in c.registry.list():
        metrics = r.meta.get("metrics") or {}
        # `train` records {"glm": ..., "popularity": ...}; `retrain` {"held-out window": {"challenger": ...}}
        glm = metrics.get("glm") or metrics.get("held-out window", {}).get("challenger") or {}
        rows.append(
            {
                "model": f"{r.name}/{r.version}",
                "kind": r.kind,
                "champion": champion is not None
                and (r.name, r.version) == (champion.name, champion.version),
                "parent": r.meta.get("parent"),
                "data_window": " .. ".join(r.meta.get("data_window") or []),
                "roc_auc": glm.get("roc_auc"),
                "log_loss": glm.get("log_loss"),
            }
        )
    if as_json:
        print_json(rows)
    elif rows:
        print_frame(pl.DataFrame(rows), f"models in {c.registry.root}")
    else:
        console.print(f"no trained model in {c.registry.root}")


@models_app.command("show")
@handle_errors
def show(
    ctx: typer.Context, model: str = typer.Argument(..., help="name or name/version.")
) -> None:
    """A model's metadata: parameters, data window, split, metrics, parent."""
    rec = ctx_obj(ctx).registry.resolve(model, use_champion=False)
    meta = {k: v for k, v in rec.meta.items() if k not in ("encoder", "spec")}
    typer.echo(json.dumps(meta, indent=2, default=str))


@models_app.command("promote")
@handle_errors
def promote(
    ctx: typer.Context, model: str = typer.Argument(..., help="name or name/version.")
) -> None:
    """Make a model the champion (the one commands and the service use by default)."""
    rec = ctx_obj(ctx).registry.promote(model)
    console.print(f"champion: {rec.name}/{rec.version}")


@models_app.command("rollback")
@handle_errors
def rollback(ctx: typer.Context) -> None:
    """Make the previous champion the champion again."""
    rec = ctx_obj(ctx).registry.rollback()
    console.print(f"champion: {rec.name}/{rec.version}")


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")

    @app.command("retrain")
    @handle_errors
    def retrain_cmd(
        ctx: typer.Context,
        test_days: float = typer.Option(
            7.0, "--test-days", help="Held-out last days both models are judged on."
        ),
        tolerance: float = typer.Option(
            0.005, "--tolerance", help="How much worse (AUC, log loss) still counts as not worse."
        ),
        max_gap: float = typer.Option(
            0.05, "--max-gap", help="Train - validation AUC beyond this is overfitting."
        ),
        every: str | None = typer.Option(
            None, "--every", help="Keep running on a schedule, e.g. 1d, 6h."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Train a challenger GLM on fresh data; promote it only when it is not worse than the
        champion on the held-out window and the benchmark set, and does not overfit."""
        c = ctx_obj(ctx)
        policy = RetrainPolicy(test_days=test_days, tolerance=tolerance, max_gap=max_gap)
        interval = parse_interval(every) if every else None
        while True:
            decision = retrain(c.store.load(), c.settings, c.registry, policy)
            if as_json:
                print_json(decision.to_dict())
            else:
                verdict = "promoted" if decision.promoted else "refused"
                console.print(
                    f"challenger {decision.challenger.name}/{decision.challenger.version}: {verdict}"
                )
                for reason in decision.reasons:
                    console.print(f"  - {reason}")
                for name, by_model in decision.metrics.items():
                    keys = ["roc_auc", "log_loss", "ece", "examples"]
                    print_frame(
                        pl.DataFrame(
                            {
                                "metric": keys,
                                **{m: [v[k] for k in keys] for m, v in by_model.items()},
                            }
                        ),
                        name,
                    )
            if interval is None:
                return
            time.sleep(interval)
