"""serve: the HTTP API (needs the `api` extra)."""

from __future__ import annotations

from pathlib import Path

import typer

from feedrank.cli.common import ctx_obj, handle_errors
from feedrank.exceptions import MissingExtraError


def register(app: typer.Typer) -> None:
    @app.command()
    @handle_errors
    def serve(
        ctx: typer.Context,
        host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
        port: int = typer.Option(8000, "--port", min=1, max=65535, help="TCP port."),
        store: str | None = typer.Option(
            None, "--store", help="Store URL (default: the global --store / FEEDRANK_STORE)."
        ),
        insecure: bool = typer.Option(
            False, "--insecure", help="Serve without API keys when none are configured."
        ),
        keys: Path | None = typer.Option(
            None,
            "--keys",
            exists=True,
            dir_okay=False,
            help="File of API keys, one 'key=scope[,scope]' per line (or FEEDRANK_API_KEYS).",
        ),
        log_level: str = typer.Option("warning", "--log-level", help="uvicorn log level."),
    ) -> None:
        """Serve the HTTP API: ingest events, recommendations with reasons, erasure. Refuses to
        start without API keys unless --insecure. OpenAPI docs at /docs."""
        try:
            import uvicorn

            from feedrank.api.app import create_app
            from feedrank.api.settings import ApiSettings
        except ImportError as exc:
            raise MissingExtraError(
                f"the HTTP API needs its extra: pip install 'feedrank[api]' ({exc})"
            ) from exc
        c = ctx_obj(ctx)
        settings = ApiSettings.from_env(
            store_url=store or c.store_url,
            models_dir=c.models_dir_option,
            keys_file=keys,
            insecure=insecure or None,
        )
        app = create_app(settings)  # checks the keys before anything listens
        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
