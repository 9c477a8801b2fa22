"""Plain recommendations' latency while explanations arrive: 200 plain requests/s and 50
`explain=true` requests/s at once, against `feedrank serve` with the cost limit (the default,
FEEDRANK_MAX_EXPENSIVE=1) and without one (a limit no load reaches), side by side in one run.

    .venv/bin/python bench/bench_cost_limit.py [--seconds 20]

The site: 2,000 users, 400 items, 30 days (datasets.demo), a GLM, every user scored into a
generation. Latency is counted from each request's scheduled time (open loop, bench_api)."""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
from pathlib import Path

from _common import machine
from bench_api import free_port, open_loop, start_server, stop

PLAIN_RATE, EXPLAIN_RATE = 200, 50


def build(root: Path) -> tuple[str, Path, list[str]]:
    from feedrank.datasets.demo import generate_site
    from feedrank.io import import_frame
    from feedrank.pipeline.registry import Registry
    from feedrank.pipeline.score import score_all
    from feedrank.pipeline.train import train
    from feedrank.settings import Settings
    from feedrank.store import open_store
    from feedrank.views.site import read_site

    site = generate_site(n_users=2000, n_items=400, days=30, seed=1)
    url, models = f"sqlite:///{root / 'site.db'}", root / "site.models"
    with open_store(url) as store:
        for kind, frame in (("users", site.users), ("items", site.items),
                            ("interactions", site.events)):  # fmt: skip
            import_frame(store, kind, frame, strict=True)  # type: ignore[arg-type]
        result = train(read_site(store), Settings(), "glm", test_days=7)
        rec = Registry(models).save(result.model, "glm", fallback=result.fallback)
        score_all(store, result.model, f"{rec.name}/{rec.version}", result.fallback, k=50)
    return url, models, sorted(site.events["user_id"].unique().to_list())


async def mixed(port: int, users: list[str], seconds: float) -> tuple[float, float, int, int]:
    rng = random.Random(7)
    plain = [f"/users/{rng.choice(users)}/recommendations?k=10"
             for _ in range(int(PLAIN_RATE * seconds))]  # fmt: skip
    explain = [f"/users/{rng.choice(users)}/recommendations?k=10&explain=true"
               for _ in range(int(EXPLAIN_RATE * seconds))]  # fmt: skip
    await open_loop(port, plain[: PLAIN_RATE * 2], PLAIN_RATE)  # warm-up
    p, e = await asyncio.gather(
        open_loop(port, plain, PLAIN_RATE), open_loop(port, explain, EXPLAIN_RATE, n_conns=16)
    )
    return p.pct(50), p.pct(99), e.ok, e.sent - e.ok


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        url, models, users = build(Path(tmp))
        rows = []
        for label, limit in (("limit 1 (default)", "1"), ("no limit", "100000")):
            os.environ["FEEDRANK_MAX_EXPENSIVE"] = limit
            port = free_port()
            with (Path(tmp) / f"server-{limit}.log").open("wb") as log:
                proc, _ = start_server("new", url, models, port, log)
                try:
                    p50, p99, served, refused = asyncio.run(mixed(port, users, args.seconds))
                finally:
                    stop(proc)
            rows.append((label, p50, p99, served / args.seconds, refused))
    print(f"{PLAIN_RATE} plain req/s + {EXPLAIN_RATE} explain req/s for {args.seconds:g} s")
    print(
        f"{'':20} {'plain p50 ms':>13} {'plain p99 ms':>13} {'explain 200/s':>14} {'explain 429':>12}"
    )
    for label, p50, p99, per_s, refused in rows:
        print(f"{label:20} {p50:13.1f} {p99:13.1f} {per_s:14.1f} {refused:12d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
