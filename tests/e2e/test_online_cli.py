"""`feedrank ctr` on a real SQLite file: impressions tagged by the model that served them, clicks
credited within the label window, counted by hand."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from feedrank.cli.main import app

runner = CliRunner()

EVENTS = """user_id,item_id,type,timestamp,position,model,value
u1,a,impression,2026-01-01T10:00:00Z,1,glm,
u1,b,impression,2026-01-01T10:00:00Z,2,glm,
u1,a,click,2026-01-01T10:01:00Z,,,30
u2,a,impression,2026-01-01T11:00:00Z,1,glm,
u2,c,impression,2026-01-01T11:00:00Z,2,glm,
u2,c,click,2026-01-01T11:02:00Z,,,10
u3,b,impression,2026-01-01T12:00:00Z,1,popularity,
u3,b,click,2026-01-03T12:00:00Z,,,5
"""


def test_ctr_per_served_model_and_position(tmp_path: Path) -> None:
    csv = tmp_path / "events.csv"
    csv.write_text(EVENTS)
    store = ["--store", f"sqlite:///{tmp_path / 'db.sqlite'}"]
    imported = runner.invoke(app, [*store, "import", "interactions", str(csv)])
    assert imported.exit_code == 0, imported.output
    result = runner.invoke(app, [*store, "ctr", "--json"])
    assert result.exit_code == 0, result.output
    rows = {(r["model"], r["position"]): r for r in json.loads(result.output)}
    # glm: position 1 shown twice, clicked once (u1's a, value 30); position 2 twice, once (u2's
    # c, value 10). popularity: u3's click came two days later, outside the label window.
    assert (rows[("glm", 1)]["impressions"], rows[("glm", 1)]["clicks"]) == (2, 1)
    assert rows[("glm", 1)]["ctr"] == 0.5 and rows[("glm", 1)]["engagement_value"] == 30
    assert (rows[("glm", 2)]["clicks"], rows[("glm", 2)]["engagement_value"]) == (1, 10)
    assert (rows[("popularity", 1)]["impressions"], rows[("popularity", 1)]["clicks"]) == (1, 0)
    table = runner.invoke(app, [*store, "ctr"], env={"COLUMNS": "200"})
    assert "click-through by model and position" in table.output
