"""train, predict, score, recommend."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from feedrank.cli import rules_opts
from feedrank.cli.common import (
    Context,
    console,
    ctx_obj,
    err_console,
    handle_errors,
    parse_params,
    print_frame,
    print_json,
    progress_bar,
    steps,
)
from feedrank.exceptions import FeedrankError, RowError, ValidationError

if TYPE_CHECKING:
    from feedrank.pipeline.train import TrainResult
    from feedrank.serving.ranking import Answer
    from feedrank.serving.rules import Rules
    from feedrank.serving.service import RecommendationService
    from feedrank.store import Store

MODEL_OPT = typer.Option(
    None, "--model", help="Model name (or name/version); default: the champion, else the newest."
)
ENGINES = ("local", "spark")
ENGINE_OPT = typer.Option(
    "local", "--engine", help="local | spark (docs/spark.md; the spark extra and Java 17/21)."
)
MASTER_OPT = typer.Option(
    "local[*]",
    "--master",
    envvar="FEEDRANK_SPARK_MASTER",
    help="--engine spark: local[N] | spark://HOST:PORT | yarn | k8s://URL.",
)
EVENTS_OPT = typer.Option(
    None, "--events", help="Read events from this Parquet directory (`feedrank export`)."
)
DRIVER_MEMORY_OPT = typer.Option(
    None, "--driver-memory", help="--engine spark: the driver's memory, e.g. 4g."
)
MODEL_KINDS = (
    "glm, popularity, freshness, itemknn, userknn, als, bpr, ease, transition, content, hybrid, "
    "ltr, sasrec, blend, bilinear, twotower"
)


def parse_time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    import polars as pl

    from feedrank.schema import to_timestamp

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


def load_service(c: Context, name: str | None) -> tuple[RecommendationService, str]:
    """A registry model (with its fallback) serving the store as it is now; the store's
    settings say which event types are negative feedback."""
    from feedrank.pipeline.score import serving

    model, rec = c.registry.load(name)
    service = serving(c.store, model, c.registry.fallback(rec), c.settings.negative_types)
    return service, f"{rec.name}/{rec.version}"


def show_training(result: TrainResult, top: int) -> None:
    import polars as pl

    from feedrank.models.glm import GLMRecommender

    split = result.split
    console.print(f"[bold]split[/bold]: {split['description']}", highlight=False, soft_wrap=True)
    console.print(f"  {split['model']}", highlight=False)
    print_frame(
        result.metrics_frame(),
        f"held-out metrics (ranking at k={split['k']}, mean over {split['test_users']} users; "
        "probabilities on the held-out examples where the model gives them)",
    )
    model = result.model
    if model.kind == "ltr":
        console.print(f"  ranker: {model.summary()}", highlight=False)  # type: ignore[attr-defined]
    kept, total = getattr(model, "kept_items_", (0, 0))
    if kept < total:
        console.print(
            f"  {model.kind} kept the {kept} items with the most engaged users of {total} "
            "(max_items); the others get no signal from it",
            highlight=False,
        )
    if isinstance(model, GLMRecommender):
        table = model.coef_table()
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
        model: str = typer.Option("glm", "--model", help=f"One of: {MODEL_KINDS}."),
        test_from: str | None = typer.Option(
            None, "--test-from", help="Hold out events from this time on."
        ),
        test_days: float | None = typer.Option(
            None, "--test-days", help="Hold out the last N days."
        ),
        split: str = typer.Option(
            "temporal", "--split", help="temporal (by --test-days/--test-from) | last | loo."
        ),
        k: int = typer.Option(10, "--k", min=1, help="Cut-off of the ranking metrics."),
        seed: int = typer.Option(0, "--seed", help="The seed of a loo split."),
        name: str | None = typer.Option(
            None, "--name", help="Save under this name (default: the model kind)."
        ),
        top: int = typer.Option(30, "--top", help="GLM coefficients to print."),
        param: list[str] = typer.Option(
            [], "--param", help="A model parameter: name=value (repeatable), e.g. factors=64."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        engine: str = ENGINE_OPT,
        master: str = MASTER_OPT,
        events: Path | None = EVENTS_OPT,
        driver_memory: str | None = DRIVER_MEMORY_OPT,
    ) -> None:
        """Fit any model, measure it on held-out data beside popularity, save it (with its
        cold-start fallback) in the registry. With --engine spark (als, glm, itemknn) the fit
        runs on a cluster, on every event, and is saved the same way."""
        from feedrank.models.glm import GLMRecommender
        from feedrank.pipeline.train import train as run

        c = ctx_obj(ctx)
        params = parse_params(param)
        tuned = None if params else c.registry.tuned(model)
        if tuned:
            params = tuned["params"]
            console.print(
                f"parameters from `feedrank tune` ({tuned['objective']} on {tuned['validation']}): "
                + ", ".join(f"{k}={v}" for k, v in params.items()),
                highlight=False,
                soft_wrap=True,
            )
        _check_engine(engine)
        if engine == "spark":
            if test_days is not None or test_from is not None or split != "temporal":
                raise FeedrankError(
                    "--engine spark fits on every event and holds none out; got a held-out "
                    "option (--test-days, --test-from or --split): measure with `feedrank "
                    "evaluate`, or train locally"
                )
            from feedrank.spark.jobs import train as spark_train

            with steps(f"training {model} on Spark ({master})"):
                fitted, fallback = spark_train(
                    c.store, c.settings, model, params, master, events, driver_memory
                )
            rec = c.registry.save(
                fitted, name, {"engine": "spark", "master": master}, fallback=fallback
            )
            if isinstance(fitted, GLMRecommender):
                fitted.coef_table().write_csv(rec.path / "coefficients.csv")
            console.print(f"saved {rec.name}/{rec.version} (fitted on Spark, {master})")
            return
        data = c.site(events)
        with steps(f"training {model}") as step:
            result = run(
                data,
                c.settings,
                model,
                params,
                split=split,
                test_days=test_days,
                test_from=parse_time(test_from, "--test-from"),
                k=k,
                seed=seed,
                progress=step,
            )
        rec = c.registry.save(
            result.model,
            name,
            {
                "split": result.split,
                "metrics": result.metrics(),
                "tuned": tuned,
                **result.diagnostics(c.settings),
            },
            fallback=result.fallback,
        )
        if isinstance(result.model, GLMRecommender):
            result.model.coef_table().write_csv(rec.path / "coefficients.csv")
        if as_json:
            out: dict[str, Any] = {
                "model": f"{rec.name}/{rec.version}",
                "split": result.split,
                "metrics": result.metrics(),
            }
            if isinstance(result.model, GLMRecommender):
                out["coefficients"] = result.model.coef_table().to_dicts()
            print_json(out)
            return
        show_training(result, top)
        console.print(f"saved {rec.name}/{rec.version}")

    @app.command()
    @handle_errors
    def tune(
        ctx: typer.Context,
        model: str = typer.Option(..., "--model", help=f"One of: {MODEL_KINDS}."),
        trials: int = typer.Option(20, "--trials", min=1, help="Parameter points to try."),
        time_budget: float | None = typer.Option(
            None, "--time-budget", help="Stop starting trials after this many seconds."
        ),
        test_from: str | None = typer.Option(
            None, "--test-from", help="The test window `train` will hold out (never used here)."
        ),
        test_days: float | None = typer.Option(None, "--test-days", help="As for train."),
        split: str = typer.Option("temporal", "--split", help="As for train."),
        k: int = typer.Option(10, "--k", min=1, help="Cut-off of the ranking metrics."),
        seed: int = typer.Option(0, "--seed", help="The seed of the splits (as for train)."),
        param: list[str] = typer.Option(
            [], "--param", help="A parameter held fixed: name=value (repeatable)."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Search a family's parameters on a validation split carved from the training window
        (never the test window); store the chosen ones, which `train` then uses."""
        from feedrank.pipeline.tune import tune as run

        c = ctx_obj(ctx)
        data = c.site()
        with steps(f"tuning {model}") as step:
            result = run(
                data,
                c.settings,
                model,
                trials,
                time_budget,
                fixed=parse_params(param),
                split=split,
                test_days=test_days,
                test_from=parse_time(test_from, "--test-from"),
                k=k,
                seed=seed,
                progress=step,
            )
        path = c.registry.save_tuned(result.record())
        if as_json:
            print_json({**result.record(), "table": result.trials.to_dicts()})
            return
        console.print(f"[bold]validation[/bold]: {result.validation}", highlight=False)
        console.print(f"[bold]test split left untouched[/bold]: {result.test}", highlight=False)
        print_frame(result.trials, f"trials ({result.objective} on validation; best chosen)")
        console.print(
            f"chosen: {result.params} -> {path} (`feedrank train --model {model}` uses them)",
            highlight=False,
        )

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
        import polars as pl

        from feedrank.io import read_table
        from feedrank.schema import to_timestamp

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
        m, _ = c.registry.load(model)
        if not m.probabilistic:
            raise FeedrankError(
                f"predict needs a model with probabilities (glm, bilinear, twotower); got '{m.kind}'"
            )
        data = c.site()
        result = rows.select("user_id", "item_id", "timestamp").with_columns(
            probability=pl.Series(m.predict_proba(data, rows))
        )
        unknown = rows.filter(~pl.col("item_id").is_in(data.items["item_id"].implode())).height
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
        engine: str = ENGINE_OPT,
        master: str = MASTER_OPT,
        events: Path | None = EVENTS_OPT,
        driver_memory: str | None = DRIVER_MEMORY_OPT,
    ) -> None:
        """Top-K for every user, written to the store as a new generation and activated
        atomically (readers never see half a generation). With --engine spark the users are
        scored on a cluster (the same rules; --events: their Parquet directory)."""
        from feedrank.pipeline.score import every_user, score_all

        c = ctx_obj(ctx)
        _check_engine(engine)
        m, rec = c.registry.load(model)
        label = f"{rec.name}/{rec.version}"
        if engine == "spark":
            from feedrank.spark.jobs import score as spark_score

            with steps(f"scoring every user on Spark ({master})"):
                gen, recs = spark_score(
                    c.store,
                    m,
                    label,
                    c.registry.fallback(rec),
                    k,
                    not include_seen,
                    master,
                    events,
                    driver_memory,
                )
            console.print(
                f"generation {gen} active: {recs.height} recommendations for "
                f"{recs['user_id'].n_unique()} users ({label}, scored on Spark)"
            )
            return
        if events is not None:
            raise FeedrankError(
                "--events is read by --engine spark; local scoring reads the store's events"
            )
        with progress_bar("scoring users", total=len(every_user(c.store))) as advance:
            gen, recs = score_all(
                c.store, m, label, c.registry.fallback(rec), k, not include_seen, advance
            )
        console.print(
            f"generation {gen} active: {recs.height} recommendations for "
            f"{recs['user_id'].n_unique()} users ({label})"
        )

    @app.command()
    @handle_errors
    def recommend(
        ctx: typer.Context,
        user: str | None = typer.Argument(None, help="The user to recommend for."),
        all_users: bool = typer.Option(
            False, "--all", help="Every user (use with --format jsonl)."
        ),
        session: str | None = typer.Option(
            None,
            "--session",
            help="Items the visitor engaged with this session (I1,I2,...): recommendations for "
            "an anonymous visitor, or blended into USER's history when it is short.",
        ),
        model: str | None = MODEL_OPT,
        k: int = typer.Option(10, "--k", min=1, help="Items per user."),
        explain: bool = typer.Option(
            False, "--explain", help="Each item's largest contributions to its score."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        fmt: str = typer.Option("table", "--format", help="table | json | jsonl."),
        include_seen: bool = typer.Option(
            False, "--include-seen", help="Keep items the user already engaged with."
        ),
        filter: list[str] | None = rules_opts.FILTER,
        exclude: list[str] | None = rules_opts.EXCLUDE,
        include: list[str] | None = rules_opts.INCLUDE,
        boost: list[str] | None = rules_opts.BOOST,
        max_per: list[str] | None = rules_opts.MAX_PER,
        offset: int = rules_opts.OFFSET,
    ) -> None:
        """What should this user see next? Where the model has nothing to say, popular items
        (in the user's segment, then overall), the newest and then any item fill the list, each
        row marked with its source; rules (--filter, --boost, ...) as in docs/api.md."""
        from feedrank.pipeline.score import every_user

        c = ctx_obj(ctx)
        if all_users and (user is not None or session is not None):
            raise FeedrankError("--all takes no USER and no --session")
        if not all_users and user is None and session is None:
            raise FeedrankError("give USER, --session I1,I2 or --all")
        if fmt not in ("table", "json", "jsonl"):
            raise FeedrankError(f"--format must be one of ['table', 'json', 'jsonl']; got '{fmt}'")
        fmt = "json" if as_json and fmt == "table" else fmt
        rules = rules_opts.rules_from(
            filter, exclude, include, boost, max_per, offset, not include_seen
        )
        if session is not None:
            payload = [session_payload(c, model, user, session.split(","), k, rules, explain)]
        else:
            service, label = load_service(c, model)
            users = every_user(c.store) if all_users or user is None else [user]
            with progress_bar("recommending", total=len(users)) as advance:
                ans = service.answer(users, k, rules, progress=advance if all_users else None)
            reasons = service.explain(ans.recs) if explain else None
            payload = _payload(ans, reasons, label)
        if not any(entry["items"] for entry in payload):
            raise FeedrankError(
                f"nothing to recommend to {user or 'any user'}: no item is left that the model, "
                "popularity or recency can rank (import items or interactions, or loosen the "
                "rules)"
            )
        if fmt == "jsonl":
            for entry in payload:
                typer.echo(json.dumps(entry))
        elif fmt == "json":
            print_json(payload if all_users else payload[0])
        else:
            print_answers(c, payload, explain)


def session_payload(
    c: Context,
    model: str | None,
    user: str | None,
    items: list[str],
    k: int,
    rules: Rules,
    explain: bool,
) -> dict[str, Any]:
    """The answer to a session request, as `POST /sessions/recommendations` gives it."""
    from feedrank.serving.session import recommend_session
    from feedrank.views.view import store_catalogue

    m, rec = c.registry.load(model)
    catalogue = store_catalogue(c.store)
    fallback = c.registry.fallback(rec)
    negative = c.settings.negative_types
    out = recommend_session(
        c.store, m, fallback, catalogue, items, user, k, rules, explain, negative
    )
    return {"model": f"{rec.name}/{rec.version}", **out}


def _check_engine(engine: str) -> None:
    if engine not in ENGINES:
        raise FeedrankError(f"--engine must be one of {list(ENGINES)}; got '{engine}'")


def print_answers(c: Context, payload: list[dict[str, Any]], explain: bool) -> None:
    import polars as pl

    from feedrank.serving.service import reason_text

    titles = _titles(c.store)
    for entry in payload:
        who = entry.get("user_id") or "session"
        console.print(f"[bold]{who}[/bold] ({entry['model']})")
        rows = [
            {
                "rank": r["rank"],
                "item_id": r["item_id"],
                **({"title": titles.get(r["item_id"], "")} if titles else {}),
                "score": r["score"],
                "source": r["source"],
                **({"boost": r["boost"]["factor"]} if "boost" in r else {}),
                **({"why": reason_text(r["reasons"])} if explain else {}),
            }
            for r in entry["items"]
        ]
        print_frame(pl.DataFrame(rows))
        removed = [f"{a['rule']}: {a['removed']}" for a in entry.get("rules", []) if a["removed"]]
        if removed:
            console.print("removed by rules: " + "; ".join(removed), highlight=False)


def _titles(store: Store) -> dict[str, str]:
    import polars as pl

    items = store.items()
    if "title" not in items.columns:
        return {}
    return dict(items.select("item_id", pl.col("title").cast(pl.String)).iter_rows())


def _payload(
    ans: Answer, reasons: list[list[dict[str, Any]]] | None, label: str
) -> list[dict[str, Any]]:
    """One entry per user, each as the HTTP API answers it."""
    from feedrank.serving.ranking import items_out

    out = []
    row = 0
    for (u,), part in ans.recs.group_by("user_id", maintain_order=True):
        why = reasons[row : row + part.height] if reasons is not None else None
        row += part.height
        out.append(
            {
                "user_id": u,
                "model": label,
                "items": items_out(part.to_dicts(), why, ans.boosts),
                "rules": ans.applied,
            }
        )
    return out
