"""Shared helpers for the benchmark programs: the --small flag, timing and the result table."""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--small", action="store_true", help="a tiny input, to smoke-test in seconds"
    )
    return parser.parse_args()


def timed(fn: Callable[[], Any], repeat: int = 1, warmup: bool = False) -> tuple[float, Any]:
    """Best wall-clock seconds over `repeat` calls (after one untimed call if `warmup`), and
    the result of the last call."""
    if warmup:
        fn()
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


@dataclass
class Row:
    what: str
    size: str
    feedrank_s: float
    peer: str
    peer_s: float
    n: float  # units of work, for throughput
    unit: str  # e.g. "events/s"

    @property
    def ratio(self) -> float:
        return self.peer_s / self.feedrank_s if self.feedrank_s > 0 else float("nan")


def _si(x: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}"
    return f"{x:.3g}"


def print_table(title: str, rows: list[Row]) -> None:
    """A plain-text table; ratio = peer seconds / feedrank seconds (> 1: feedrank is faster)."""
    header = (
        "what",
        "size",
        "feedrank s",
        "peer",
        "peer s",
        "feedrank rate",
        "peer rate",
        "peer/feedrank",
    )
    body = [
        (
            r.what,
            r.size,
            f"{r.feedrank_s:.3f}",
            r.peer,
            f"{r.peer_s:.3f}" if r.peer_s == r.peer_s else "-",
            f"{_si(r.n / r.feedrank_s)} {r.unit}",
            f"{_si(r.n / r.peer_s)} {r.unit}" if r.peer_s == r.peer_s else "-",
            f"{r.ratio:.2f}x" if r.ratio == r.ratio else "-",
        )
        for r in rows
    ]
    print_rows(title, header, body)


def print_rows(title: str, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """A plain aligned table under a title line that names the machine and its load."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(f"{c:<{w}}" for c, w in zip(cells, widths, strict=True)).rstrip()

    print(f"\n{title}  [{machine()}]")
    print(line(header))
    print(line(tuple("-" * w for w in widths)))
    for r in rows:
        print(line(r))


def machine() -> str:
    """Cores, Python and the 1-minute load average: other work on the machine skews timings."""
    load = os.getloadavg()[0]
    return f"{os.cpu_count()} cores, Python {platform.python_version()}, load {load:.1f}"


def check(ok: bool, what: str) -> None:
    """Print and enforce an agreement check between feedrank and the peer."""
    print(f"check: {what}: {'OK' if ok else 'MISMATCH'}")
    if not ok:
        raise SystemExit(f"benchmark check failed: {what}")
