"""The README's first-hour block, run as written: each `feedrank ...` command of it (split on
`&&`, comments dropped) through the CLI, from the repository root, with the block's
FEEDRANK_STORE pointing into a temporary directory. A README edit that breaks a command fails
here."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from feedrank.cli.main import app

ROOT = Path(__file__).resolve().parents[2]


def first_hour_block() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Your own data: the first hour", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the first-hour section has a bash block"
    return [line.split("  #", 1)[0].strip() for line in block.group(1).splitlines()]


def test_the_first_hour_block_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    env = {"COLUMNS": "200"}
    outputs = []
    for line in first_hour_block():
        if line.startswith("source "):
            continue
        if line.startswith("export "):
            key, value = line.removeprefix("export ").split("=", 1)
            # the same store name, in a temporary directory instead of the checkout
            env[key] = value.replace("sqlite:///./", f"sqlite:///{tmp_path}/")
            continue
        for command in line.split("&&"):
            args = shlex.split(command)
            assert args[0] == "feedrank", command
            result = CliRunner().invoke(app, args[1:], env=env)
            assert result.exit_code == 0, f"{command}\n{result.output}{result.exception}"
            outputs.append(result.output)
    assert len(outputs) == 6
    imported, ease, _, knn, _, recs = outputs
    assert "rating" in imported and "count as engagements" in imported
    assert "ease" in ease and "popularity" in ease
    assert "itemknn" in knn
    assert "model" in recs and "because of" in recs  # EASE explains by the history items
    assert not list(ROOT.glob("first-hour.db*")), "nothing written into the checkout"
