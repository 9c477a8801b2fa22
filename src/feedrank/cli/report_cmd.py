"""report: one self-contained HTML page."""

from __future__ import annotations

from pathlib import Path

import typer

from feedrank.cli.common import console, ctx_obj, handle_errors, steps


def register(app: typer.Typer) -> None:
    @app.command()
    @handle_errors
    def report(
        ctx: typer.Context,
        out: Path = typer.Option(
            Path("report.html"), "--out", help="Where to write the HTML page."
        ),
        model: list[str] = typer.Option(
            ["glm"], "--model", help="Model kinds to compare (popularity is always added)."
        ),
        test_days: float = typer.Option(7.0, "--test-days", help="The held-out last days."),
        k: int = typer.Option(10, "--k", min=1, help="Cut-off of the ranking metrics."),
    ) -> None:
        """Model comparison, segments, GLM calibration and coefficients, hit-rate distribution,
        A/B tests, CTR by position and (with logged propensities) off-policy estimates, as one
        self-contained page with its plots."""
        from feedrank.evaluation.report import build_report

        c = ctx_obj(ctx)
        with steps("evaluating models"):
            page = build_report(c.site(), c.settings, model, test_days, k)
        out.write_text(page)
        console.print(f"wrote {out} ({len(page) // 1024} KiB)")
