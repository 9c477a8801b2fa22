"""train, predict, score, recommend."""

from __future__ import annotations

import inspect
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import typer

from feedrank.cli.common import (
    Context,
    console,
    ctx_obj,
    err_console,
    handle_errors,
    print_frame,
    print_json,
    progress_bar,
)
from feedrank.data.io import read_table
from feedrank.exceptions import FeedrankError, RowError, ValidationError
from feedrank.models import MODELS
from feedrank.models.base import Recommender
from feedrank.pipeline.recommend import RecommendationService, reason_text
from feedrank.pipeline.train import TrainResult, train_glm
from feedrank.schema import to_timestamp

MODEL_OPT = typer.Option(
    None, "--model", help="Model name (or name/version); default: the newest trained."
)


def _parse_time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    parsed = pl.select(to_timestamp(pl.lit(value), pl.String())).item()
    if parsed is None:
        raise ValidationError(
            [
                RowError(
                    None,
                    option,
                    f"{option} must be an ISO 8601 time or epoch seconds; got '{value}'",
                )
            ]
        )
    return parsed  # type: ignore[no-any-return]


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """name=value pairs; values are read as JSON when they parse (numbers, true, lists), else text."""
    out: dict[str, Any] = {}
    for p in pairs:
        if "=" not in p:
            raise FeedrankError(f"--param must be name=value; got '{p}'")
        key, raw = (x.strip() for x in p.split("=", 1))
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def load_serving(c: Context, name: str | None) -> tuple[Recommender, str]:
    model, rec = c.registry.load(name)
    model.serve_with(c.store.load())
    return model, f"{rec.name}/{rec.version}"


def all_user_ids(c: Context) -> list[str]:
    users = set(c.store.users()["user_id"].to_list())
    users |= set(c.store.load().events["user_id"].unique().to_list())
    return sorted(users)


def show_training(result: TrainResult, top: int) -> None:
    console.print(f"[bold]split[/bold]: {result.split['kind']}")
    console.print(
        f"  cut {result.split['cut']}: {result.split['train_examples']} training examples, "
        f"{result.split['test_examples']} evaluation examples"
    )
    print_frame(
        result.metrics_frame(),
        "held-out metrics (popularity = item's smoothed CTR before each example)",
    )
    table = result.model.coef_table()
    shown = (
        table.with_columns(pl.col("coefficient").abs().alias("__a"))
        .sort("__a", descending=True)
        .head(top)
    )
    print_frame(
        shown.drop("__a").sort("coefficient", descending=True),
        f"coefficients (the {min(top, table.height)} largest of {table.height}; standardised numeric features)",
    )


def register(app: typer.Typer) -> None:
    @app.command()
    @handle_errors
    def train(
        ctx: typer.Context,
        model: str = typer.Option("glm", "--model", help=f"One of {sorted(MODELS)}."),
        test_from: str | None = typer.Option(
            None, "--test-from", help="Hold out events from this time on."
        ),
        test_days: float | None = typer.Option(
            None, "--test-days", help="Hold out the last N days."
        ),
        alpha: float = typer.Option(1e-4, "--alpha", help="Penalty strength (GLM)."),
        l1_ratio: float = typer.Option(0.0, "--l1-ratio", help="0 = ridge, 1 = lasso (GLM)."),
        name: str | None = typer.Option(
            None, "--name", help="Save under this name (default: the model kind)."
        ),
        top: int = typer.Option(30, "--top", help="Coefficients to print."),
        param: list[str] = typer.Option(
            [], "--param", help="A model parameter: name=value (repeatable), e.g. factors=64."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Build features, fit, measure on held-out time beside popularity, save the model."""
        c = ctx_obj(ctx)
        if model not in MODELS:
            raise FeedrankError(f"--model must be one of {sorted(MODELS)}; got '{model}'")
        params = parse_params(param)
        allowed = sorted(set(inspect.signature(MODELS[model].__init__).parameters) - {"self"})
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise FeedrankError(f"--param names for {model} must be among {allowed}; got {unknown}")
        data = c.store.load()
        if data.events.is_empty():
            raise FeedrankError(
                f"the store {c.store_url} has no interactions: run `feedrank import` first"
            )
        if model != "glm":
            fitted = MODELS[model](**params).fit(data, c.settings)
            rec = c.registry.save(fitted, name)
            console.print(f"saved {rec.name}/{rec.version} to {rec.path}")
            return
        with console.status("building point-in-time features and fitting the GLM"):
            result = train_glm(
                data,
                c.settings,
                _parse_time(test_from, "--test-from"),
                test_days,
                **{"alpha": alpha, "l1_ratio": l1_ratio, **params},
            )
        span = data.time_span
        rec = c.registry.save(
            result.model,
            name,
            {
                "split": result.split,
                "metrics": result.metrics,
                "data_window": [str(span[0]), str(span[1])],
            },
        )
        result.model.coef_table().write_csv(rec.path / "coefficients.csv")
        if as_json:
            print_json(
                {
                    "model": f"{rec.name}/{rec.version}",
                    "split": result.split,
                    "metrics": result.metrics,
                    "coefficients": result.model.coef_table().to_dicts(),
                }
            )
            return
        show_training(result, top)
        console.print(f"saved {rec.name}/{rec.version} to {rec.path}")

    @app.command()
    @handle_errors
    def predict(
        ctx: typer.Context,
        pairs: Path = typer.Option(
            ..., "--pairs", help="File of user_id,item_id[,timestamp][,position,device,...]."
        ),
        model: str | None = MODEL_OPT,
        out: Path | None = typer.Option(None, "--out", help="Write CSV here (default: stdout)."),
        fmt: str | None = typer.Option(
            None, "--format", help="Input format: csv | jsonl | parquet."
        ),
    ) -> None:
        """Engagement probability for each (user, item) row, with features as of the row's
        timestamp (now when absent). Output CSV in input order: user_id,item_id,timestamp,probability."""
        c = ctx_obj(ctx)
        df, first_line = read_table(pairs, fmt)
        missing = [col for col in ("user_id", "item_id") if col not in df.columns]
        if missing:
            raise ValidationError(
                [
                    RowError(
                        None,
                        m,
                        f"column '{m}' is required; the columns are {df.columns}",
                        pairs.name,
                    )
                    for m in missing
                ]
            )
        now = datetime.now(UTC)
        ts = (
            to_timestamp(pl.col("timestamp"), df.schema["timestamp"])
            if "timestamp" in df.columns
            else pl.lit(None)
        )
        rows = df.with_columns(__ts=ts.cast(pl.Datetime("us", "UTC")))
        bad = (
            rows.with_row_index("__i").filter(
                pl.col("__ts").is_null() & pl.col("timestamp").is_not_null()
            )
            if "timestamp" in df.columns
            else rows.head(0)
        )
        if bad.height:
            raise ValidationError(
                [
                    RowError(
                        int(i) + first_line,
                        "timestamp",
                        f"timestamp must be an ISO 8601 time or epoch seconds; got '{v}'",
                        pairs.name,
                    )
                    for i, v in bad.select("__i", "timestamp").head(10).iter_rows()
                ],
                bad.height,
            )
        rows = rows.select(
            pl.col("user_id").cast(pl.String),
            pl.col("item_id").cast(pl.String),
            pl.col("__ts").fill_null(now).alias("timestamp"),
            (
                pl.col("position").cast(pl.Int32, strict=False)
                if "position" in df.columns
                else pl.lit(None, pl.Int32)
            ).alias("position"),
            (
                pl.col("device").cast(pl.String)
                if "device" in df.columns
                else pl.lit(None, pl.String)
            ).alias("device"),
        )
        m, _ = load_serving(c, model)
        if not callable(getattr(m, "predict_rows", None)):
            raise FeedrankError(
                f"predict needs a model with probabilities (glm, bilinear, twotower); got '{m.kind}'"
            )
        result = rows.select("user_id", "item_id", "timestamp").with_columns(
            probability=pl.Series(m.predict_rows(rows))  # type: ignore[attr-defined]
        )
        unknown = rows.filter(~pl.col("item_id").is_in(m.data_.items["item_id"].implode())).height
        if unknown:
            err_console.print(
                f"warning: {unknown} row(s) name items not in the store; their item features are missing"
            )
        result = result.with_columns(pl.col("timestamp").dt.to_string("%Y-%m-%dT%H:%M:%S%.6fZ"))
        if out:
            result.write_csv(out)
            console.print(f"wrote {result.height} predictions to {out}")
        else:
            sys.stdout.write(result.write_csv())

    @app.command()
    @handle_errors
    def score(
        ctx: typer.Context,
        model: str | None = MODEL_OPT,
        k: int = typer.Option(100, "--k", min=1, help="Items per user."),
        include_seen: bool = typer.Option(
            False, "--include-seen", help="Keep items the user already engaged with."
        ),
    ) -> None:
        """Top-K for every user, written to the store as a new generation and activated
        atomically (readers never see half a generation)."""
        c = ctx_obj(ctx)
        m, label = load_serving(c, model)
        service = RecommendationService(m)
        users = all_user_ids(c)
        with progress_bar("scoring users", total=len(users)) as advance:
            recs = service.recommend(users, k, exclude_seen=not include_seen, progress=advance)
        gen = c.store.write_generation(recs, label)
        console.print(
            f"generation {gen} active: {recs.height} recommendations for {recs['user_id'].n_unique()} users ({label})"
        )

    @app.command()
    @handle_errors
    def recommend(
        ctx: typer.Context,
        user: str | None = typer.Argument(None, help="The user to recommend for."),
        all_users: bool = typer.Option(
            False, "--all", help="Every user (use with --format jsonl)."
        ),
        model: str | None = MODEL_OPT,
        k: int = typer.Option(10, "--k", min=1, help="Items per user."),
        explain: bool = typer.Option(
            False, "--explain", help="Each item's largest feature contributions."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        fmt: str = typer.Option("table", "--format", help="table | json | jsonl."),
        include_seen: bool = typer.Option(
            False, "--include-seen", help="Keep items the user already engaged with."
        ),
    ) -> None:
        """What should this user see next? Users without history get popular items (in their
        segment, then overall), marked as such."""
        c = ctx_obj(ctx)
        if (user is None) == (not all_users):
            raise FeedrankError("give exactly one of USER or --all")
        if fmt not in ("table", "json", "jsonl"):
            raise FeedrankError(f"--format must be one of ['table', 'json', 'jsonl']; got '{fmt}'")
        fmt = "json" if as_json and fmt == "table" else fmt
        m, label = load_serving(c, model)
        service = RecommendationService(m)
        users = all_user_ids(c) if all_users or user is None else [user]
        with progress_bar("recommending", total=len(users)) as advance:
            recs = service.recommend(
                users, k, exclude_seen=not include_seen, progress=advance if all_users else None
            )  # type: ignore[arg-type]
        reasons = service.explain(recs) if explain else None
        payload = _payload(recs, reasons, label)
        if fmt == "jsonl":
            for entry in payload:
                typer.echo(json.dumps(entry))
        elif fmt == "json":
            print_json(payload if all_users else payload[0])
        else:
            titles = _titles(m)
            for entry in payload:
                console.print(f"[bold]{entry['user_id']}[/bold] ({label})")
                rows = [
                    {
                        "rank": r["rank"],
                        "item_id": r["item_id"],
                        "title": titles.get(r["item_id"], ""),
                        "score": r["score"],
                        "source": r["source"],
                        **({"why": reason_text(r["explanation"])} if explain else {}),
                    }
                    for r in entry["items"]
                ]
                print_frame(pl.DataFrame(rows))


def _titles(m: Recommender) -> dict[str, str]:
    items = m.data_.items
    if "title" not in items.columns:
        return {}
    return dict(items.select("item_id", pl.col("title").cast(pl.String)).iter_rows())


def _payload(
    recs: pl.DataFrame, reasons: list[list[dict[str, Any]]] | None, label: str
) -> list[dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for i, (u, rank, item, score, source) in enumerate(
        recs.select("user_id", "rank", "item_id", "score", "source").iter_rows()
    ):
        entry = out.setdefault(u, {"user_id": u, "model": label, "items": []})
        row: dict[str, Any] = {"rank": rank, "item_id": item, "score": score, "source": source}
        if reasons is not None:
            row["explanation"] = reasons[i]
        entry["items"].append(row)
    return list(out.values())
