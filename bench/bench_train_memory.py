"""Training memory and time: `feedrank train --model glm` on a store of ~5M events, as a user runs
it, in this design and in the one before it (a checkout of the previous design, given with
--before; skipped when absent), on the same generated site.

Each side imports the same Parquet files (users, items, interactions from
feedrank.datasets.demo.generate_site) into its own fresh SQLite store with its own CLI, then
runs `train --model glm --test-days 7` as a child process; the peak RSS is the child's
ru_maxrss (os.wait4), the time is wall time. Import time is printed too. The floor (issue 11):
at most 3 GB peak for 5M events.

    .venv/bin/python bench/bench_train_memory.py [--small] [--before /work/baseline]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine

from feedrank.datasets.demo import generate_site

FLOOR_GB = 3.0
HERE = Path(__file__).resolve().parents[1]


def run(cmd: list[str], cwd: Path) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in GB and the output of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    out = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-3000:]}")
    return seconds, usage.ru_maxrss / 1024**2, out


def side(name: str, root: Path, tmp: Path, files: dict[str, Path]) -> dict[str, float]:
    cli = str(root / ".venv" / "bin" / "feedrank")
    store = ["--store", f"sqlite:///{tmp / name}.db", "--models-dir", str(tmp / f"{name}-models")]
    t_import = 0.0
    for kind in ("users", "items", "interactions"):
        seconds, _, _ = run([cli, *store, "import", kind, str(files[kind])], root)
        t_import += seconds
    seconds, peak, out = run([cli, *store, "train", "--model", "glm", "--test-days", "7"], root)
    print(f"-- {name}: train output (tail) --\n{out.strip()[-600:]}\n", flush=True)
    return {"import_s": t_import, "train_s": seconds, "peak_gb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a ~0.3M-event smoke run")
    parser.add_argument("--before", type=Path, default=Path("/work/baseline"))
    args = parser.parse_args()
    n_users = 2_000 if args.small else 30_000
    site = generate_site(n_users=n_users, n_items=2_000, days=28, seed=0)
    n = site.events.height
    with tempfile.TemporaryDirectory(prefix="feedrank-bench-train-") as d:
        tmp = Path(d)
        files = {"users": tmp / "users.parquet", "items": tmp / "items.parquet"}
        files["interactions"] = tmp / "interactions.parquet"
        site.users.write_parquet(files["users"])
        site.items.write_parquet(files["items"])
        site.events.write_parquet(files["interactions"])
        del site
        print(f"site: {n:,} events, {n_users:,} users, 2,000 items, 28 days  [{machine()}]")
        results = {"this design": side("now", HERE, tmp, files)}
        if (args.before / ".venv" / "bin" / "feedrank").exists():
            results["before"] = side("before", args.before, tmp, files)
        else:
            print(f"(no previous design at {args.before}: its column is left out)")
    print(f"\ntrain --model glm --test-days 7 on {n:,} events")
    print(f"{'':<12} {'import s':>9} {'train s':>8} {'peak RSS GB':>12} {'bytes/event':>12}")
    for name, r in results.items():
        per_event = r["peak_gb"] * 1024**3 / n
        print(
            f"{name:<12} {r['import_s']:>9.1f} {r['train_s']:>8.1f} {r['peak_gb']:>12.2f} "
            f"{per_event:>12,.0f}"
        )
    if "before" in results:
        now, before = results["this design"], results["before"]
        print(
            f"before / now: peak RSS {before['peak_gb'] / now['peak_gb']:.2f}x, train time "
            f"{before['train_s'] / now['train_s']:.2f}x, import {before['import_s'] / now['import_s']:.2f}x"
        )
    peak = results["this design"]["peak_gb"]
    verdict = "meets" if peak <= FLOOR_GB else "is ABOVE"
    scale = "" if n >= 4_000_000 else " (at this size; the floor is stated for 5M events)"
    print(f"floor {FLOOR_GB} GB peak: this design peaks at {peak:.2f} GB and {verdict} it{scale}")


if __name__ == "__main__":
    main()
