"""models list|show|promote|rollback, and retrain."""

from __future__ import annotations

import json
import time

import typer

from feedrank.cli.common import (
    console,
    ctx_obj,
    handle_errors,
    parse_params,
    print_frame,
    print_json,
    steps,
)
from feedrank.exceptions import FeedrankError

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
    import polars as pl

    c = ctx_obj(ctx)
    champion = c.registry.champion()
    rows = []
    for r in c.registry.list():
        metrics = r.meta.get("metrics") or {}
        # `train` records {kind: ..., "popularity": ...}; `retrain` {"held-out window": {"challenger": ...}}
        own = metrics.get(r.kind) or metrics.get("held-out window", {}).get("challenger") or {}
        k = (r.meta.get("split") or {}).get("k", 10)
        rows.append(
            {
                "model": f"{r.name}/{r.version}",
                "kind": r.kind,
                "champion": champion is not None
                and (r.name, r.version) == (champion.name, champion.version),
                "parent": r.meta.get("parent"),
                "data_window": " .. ".join(str(x) for x in (r.meta.get("window") or []) if x),
                f"HR@{k}": own.get(f"HR@{k}"),
                f"NDCG@{k}": own.get(f"NDCG@{k}"),
                "roc_auc": own.get("roc_auc"),
            }
        )
    if as_json:
        print_json(rows)
    elif rows:
        print_frame(pl.DataFrame(rows), "trained models")
    else:
        console.print("no trained model yet: run `feedrank train`")


@models_app.command("show")
@handle_errors
def show(
    ctx: typer.Context, model: str = typer.Argument(..., help="name or name/version.")
) -> None:
    """A model's metadata: parameters, data window, split, metrics, parent."""
    rec = ctx_obj(ctx).registry.resolve(model, use_champion=False)
    meta = {k: v for k, v in rec.meta.items() if k not in ("encoder", "spec", "generators_fitted")}
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
        model: str | None = typer.Option(
            None, "--model", help="The challenger's kind (default: the champion's, else glm)."
        ),
        param: list[str] = typer.Option([], "--param", help="A challenger parameter: name=value."),
        test_days: float = typer.Option(
            7.0, "--test-days", help="Held-out last days both models are judged on."
        ),
        k: int = typer.Option(10, "--k", min=1, help="Cut-off of the ranking metrics."),
        tolerance: float = typer.Option(
            0.005, "--tolerance", help="How much worse still counts as not worse."
        ),
        max_gap: float = typer.Option(
            0.05, "--max-gap", help="Train - validation AUC beyond this is overfitting."
        ),
        every: str | None = typer.Option(
            None, "--every", help="Keep running on a schedule, e.g. 1d, 6h."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Train a challenger on fresh data; promote it only when it is not worse than the
        champion on the held-out window and the benchmark set, and does not overfit."""
        import polars as pl

        from feedrank.models import make
        from feedrank.pipeline.retrain import RetrainPolicy, retrain

        c = ctx_obj(ctx)
        params = parse_params(param)
        if model is not None:
            make(model, **params)  # unknown kinds and parameters fail before any work
        policy = RetrainPolicy(
            test_days=test_days,
            tolerance=tolerance,
            max_gap=max_gap,
            kind=model,
            params=params,
            k=k,
        )
        interval = parse_interval(every) if every else None
        while True:
            with steps("retraining"):
                decision = retrain(c.site(), c.settings, c.registry, policy)
            if as_json:
                print_json(decision.to_dict())
            else:
                verdict = "promoted" if decision.promoted else "refused"
                console.print(
                    f"challenger {decision.challenger.name}/{decision.challenger.version}: {verdict}"
                )
                for reason in decision.reasons + decision.split.get("notes", []):
                    console.print(f"  - {reason}", highlight=False, soft_wrap=True)
                for name, by_model in decision.metrics.items():
                    keys = list(next(iter(by_model.values())))
                    print_frame(
                        pl.DataFrame(
                            {
                                "metric": keys,
                                **{m: [v.get(key) for key in keys] for m, v in by_model.items()},
                            }
                        ),
                        name,
                    )
            if interval is None:
                return
            time.sleep(interval)
