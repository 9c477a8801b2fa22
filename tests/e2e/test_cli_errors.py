"""Issue 12: every CLI input error is one line `FILE:LINE: field: what was expected, what was
got`, exit code 2, no traceback, nothing half-written — each bad file of the attack (and the
others found since) through the real `feedrank` command."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from feedrank.cli.main import app
from feedrank.store import open_store

HEADER = "user_id,item_id,type,timestamp\n"
ROW = {"user_id": ["u1"], "item_id": ["i1"], "type": ["click"], "timestamp": ["2026-01-01"]}


def _bytes(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        (d / name).write_bytes(data)
        return d / name

    return make


def _parquet(name: str, **columns: object) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        pl.DataFrame({**ROW, **columns}).write_parquet(d / name)
        return d / name

    return make


def _directory(d: Path) -> Path:
    (d / "x.csv").mkdir()
    return d / "x.csv"


# (file, the start of the one line expected)
CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "unclosed quote": (_bytes("q.csv", (HEADER + 'u1,i1,click,"2026-01-01\n').encode()), "q.csv:2: file: "),
    "latin-1 file": (_bytes("l.csv", HEADER.encode() + b"u\xe9,i1,click,2026-01-01\n"), "l.csv:2: file: "),
    "empty file": (_bytes("e.csv", b""), "e.csv: file: "),
    "extra field": (_bytes("x.csv", (HEADER + "u1,i1,click,2026-01-01,extra\n").encode()), "x.csv:2: file: "),
    "bad JSONL line": (_bytes("b.jsonl", b'{"user_id":"u1","item_id":"i1","type":"click","timestamp":"2026-01-01"}\n{not json\n'), "b.jsonl:2: file: "),
    "a directory named x.csv": (_directory, "x.csv: file: "),
    "a Parquet list id column": (_parquet("l.parquet", item_id=[["i1"]]), "l.parquet: item_id: "),
    "not Parquet, named .parquet": (_bytes("n.parquet", b"not parquet\n"), "n.parquet: file: "),
    "a JSON array, not an object": (_bytes("a.jsonl", b"[1, 2]\n"), "a.jsonl:1: file: "),
    "gzip named .csv": (_bytes("g.csv", b"\x1f\x8b\x08\x00" + bytes(range(256))), "g.csv:1: file: "),
    "a column named twice": (_bytes("d.csv", b"user_id,user_id,type,timestamp\nu1,u2,click,2026-01-01\n"), "d.csv:1: file: "),
    "a list timestamp": (_parquet("t.parquet", timestamp=[[1, 2]]), "t.parquet: timestamp: "),
    "a list type": (_parquet("y.parquet", type=[["click"]]), "y.parquet: type: "),
    "an object value": (_bytes("v.jsonl", b'{"user_id":"u1","item_id":"i1","type":"click","timestamp":"2026-01-01","value":{"a":1}}\n'), "v.jsonl: value: "),
    "a reserved column": (_bytes("r.csv", (HEADER.strip() + ",__line\nu1,i1,click,2026-01-01,3\n").encode()), "r.csv: __line: "),
    "no timestamp column": (_bytes("n.csv", b"user_id,item_id,type\nu1,i1,click\n"), "n.csv: timestamp: "),
    "year 0 (strict)": (_bytes("z.csv", (HEADER + "u1,i1,click,0000-01-01T00:00:00\n").encode()), "z.csv:2: timestamp: "),
    "epoch -99999999999 (strict)": (_bytes("m.csv", (HEADER + "u1,i1,click,-99999999999\n").encode()), "m.csv:2: timestamp: "),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_bad_file_is_one_line_exit_2_and_nothing_written(case: str, tmp_path: Path) -> None:
    make, start = CASES[case]
    path = make(tmp_path)
    db = tmp_path / "x.db"
    result = CliRunner().invoke(
        app, ["--store", f"sqlite:///{db}", "import", "interactions", str(path), "--strict"]
    )
    lines = result.output.splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith(start), result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert not db.exists() or open_store(f"sqlite:///{db}").stats()["events"] == 0


def test_a_zero_byte_or_foreign_store_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    empty, foreign = tmp_path / "empty.db", tmp_path / "notes.txt"
    empty.write_bytes(b"")
    foreign.write_text("my notes\n")
    for path, said in ((empty, "empty file (0 bytes)"), (foreign, "not a feedrank store")):
        result = CliRunner().invoke(app, ["--store", f"sqlite:///{path}", "stats"])
        assert result.exit_code == 2 and said in result.output, result.output
        assert len(result.output.splitlines()) == 1
    assert empty.read_bytes() == b"" and foreign.read_text() == "my notes\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db", "notes.txt"]  # no -wal


def test_the_installed_command_prints_no_traceback(tmp_path: Path) -> None:
    """The same through a real process: stderr holds the one line, stdout nothing."""
    path = tmp_path / "q.csv"
    path.write_text(HEADER + 'u1,i1,click,"2026-01-01\n')
    proc = subprocess.run(
        [sys.executable, "-m", "feedrank.cli.main", "--store", f"sqlite:///{tmp_path / 'x.db'}",
         "import", "interactions", str(path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("q.csv:2: file: ") and proc.stderr.count("\n") == 1
