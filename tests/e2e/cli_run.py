"""The CLI run in process as a user types it against one SQLite store, for the e2e tests."""

from pathlib import Path

from typer.testing import CliRunner

from feedrank.cli.main import app

runner = CliRunner()


def run(db: Path, *args: str, code: int = 0, columns: int = 200) -> str:
    """The command's output; its exit code must be `code`."""
    result = runner.invoke(
        app, ["--store", f"sqlite:///{db}", *args], env={"COLUMNS": str(columns)}
    )
    assert result.exit_code == code, result.output + str(result.exception)
    return result.output
