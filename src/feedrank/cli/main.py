"""The `feedrank` command."""

from __future__ import annotations

from pathlib import Path

import typer

from feedrank import __version__
from feedrank.cli import (
    data_cmds,
    demo_cmd,
    evaluate_cmd,
    experiment_cmds,
    items_cmd,
    model_cmds,
    registry_cmds,
    report_cmd,
    serve_cmd,
    similar_cmd,
)
from feedrank.cli.common import Context

app = typer.Typer(
    name="feedrank",
    help="Personalization engine: import events, train engagement models, serve recommendations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"feedrank {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    store: str = typer.Option(
        "sqlite:///./feedrank.db",
        "--store",
        envvar="FEEDRANK_STORE",
        help="Store URL, e.g. sqlite:///./feedrank.db",
    ),
    models_dir: str | None = typer.Option(
        None,
        "--models-dir",
        envvar="FEEDRANK_MODELS",
        help="Where trained models are saved (default: beside the SQLite file).",
    ),
    settings: Path | None = typer.Option(
        None,
        "--settings",
        envvar="FEEDRANK_SETTINGS",
        exists=True,
        dir_okay=False,
        help="TOML settings for this command only (`feedrank settings import` stores them).",
    ),
    debug: bool = typer.Option(False, "--debug", help="Print tracebacks with errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    ctx.obj = Context(store, models_dir, settings, debug)


app.add_typer(data_cmds.import_app, name="import")
app.add_typer(items_cmd.items_app, name="items")
data_cmds.register(app)
model_cmds.register(app)
similar_cmd.register(app)
demo_cmd.register(app)
experiment_cmds.register(app)
registry_cmds.register(app)
evaluate_cmd.register(app)
report_cmd.register(app)
serve_cmd.register(app)

if __name__ == "__main__":
    app()
