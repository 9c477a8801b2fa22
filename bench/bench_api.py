"""The HTTP API under load, on loopback: recommendation latency (p50/p99) and throughput at a
fixed request rate, and event ingestion in batches of 100. Beside it, its peer: the model's own
recommend() called per request in process (what serving without precomputed generations costs,
before any HTTP), with the same answers checked; and the live re-scoring of users who just acted.

    .venv/bin/python bench/bench_api.py [--small]

A synthetic site (feedrank.datasets.demo) is imported into a temporary SQLite store, a GLM is
trained, every user is scored into an active generation, then `feedrank serve` is started as
its own process on 127.0.0.1 and driven by an open-loop load generator (requests are sent on a
fixed schedule whatever the responses do, and latency counts from the scheduled time, so a
stalled server shows up as latency rather than as a lower rate). Bounded in time and count;
the server is always killed at the end."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from feedrank.serving.service import RecommendationService

KEY = "bench-key"
FLOOR_P99_MS = 25.0
FLOOR_EVENTS_S = 5_000.0


# -- a minimal keep-alive HTTP/1.1 client: cheap enough to leave the CPU to the server ----------
class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        return cls(r, w)

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = next(
            int(x.split(":", 1)[1]) for x in lines[1:] if x.lower().startswith("content-length:")
        )
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


@dataclass
class LoadResult:
    rate: float
    sent: int
    ok: int
    seconds: float
    latencies_ms: np.ndarray

    @property
    def throughput(self) -> float:
        return self.ok / self.seconds

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q))


async def open_loop(port: int, paths: list[str], rate: float, n_conns: int = 48) -> LoadResult:
    """Send paths[i] at start + i/rate on a pool of connections; latency from the schedule."""
    pool: asyncio.Queue[Conn] = asyncio.Queue()
    for _ in range(n_conns):
        pool.put_nowait(await Conn.open(port))
    lat = np.zeros(len(paths))
    ok = 0
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.05

    async def one(i: int, path: str) -> None:
        nonlocal ok
        due = t0 + i / rate
        await asyncio.sleep(max(0.0, due - loop.time()))
        conn = await pool.get()
        try:
            status, _ = await conn.request("GET", path)
        finally:
            pool.put_nowait(conn)
        lat[i] = (loop.time() - due) * 1e3
        ok += status == 200

    await asyncio.gather(*(one(i, p) for i, p in enumerate(paths)))
    elapsed = loop.time() - t0
    while not pool.empty():
        pool.get_nowait().close()
    return LoadResult(rate, len(paths), ok, elapsed, lat)


async def ingest(port: int, batches: list[bytes], n_conns: int = 4) -> tuple[float, int]:
    """Closed loop: n_conns clients post batches back to back. Seconds and events stored."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for b in batches:
        queue.put_nowait(b)
    stored = 0

    async def worker() -> None:
        nonlocal stored
        conn = await Conn.open(port)
        while not queue.empty():
            status, body = await conn.request("POST", "/events", queue.get_nowait())
            if status != 200:
                raise RuntimeError(f"ingestion answered {status}: {body[:300]!r}")
            stored += json.loads(body)["stored"]
        conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(n_conns)))
    return time.perf_counter() - t0, stored


async def fetch(port: int, path: str) -> dict[str, object]:
    conn = await Conn.open(port)
    try:
        status, body = await conn.request("GET", path)
    finally:
        conn.close()
    if status != 200:
        raise RuntimeError(f"GET {path} answered {status}: {body[:300]!r}")
    out: dict[str, object] = json.loads(body)
    return out


# -- setup -------------------------------------------------------------------------------------
def build(root: Path, small: bool) -> tuple[str, Any, list[str], list[str]]:
    from feedrank.datasets.demo import generate_site
    from feedrank.io import import_frame
    from feedrank.pipeline.registry import Registry
    from feedrank.pipeline.train import train_glm
    from feedrank.serving.service import RecommendationService
    from feedrank.settings import Settings
    from feedrank.store import open_store

    size = dict(n_users=300, n_items=100, days=10) if small else {}
    t0 = time.perf_counter()
    site = generate_site(seed=7, **size)  # type: ignore[arg-type]
    url = f"sqlite:///{root / 'bench.db'}"
    store = open_store(url)
    import_frame(store, "users", site.users, strict=True)
    import_frame(store, "items", site.items, strict=True)
    import_frame(store, "interactions", site.events, strict=True)
    data = store.load()
    model = train_glm(data, Settings(), test_days=3 if small else 7).model.serve_with(data)
    rec = Registry(root / "bench.models").save(model, "glm")
    users = data.users["user_id"].to_list()
    recs = RecommendationService(model).recommend(users, 100)
    store.write_generation(recs, f"{rec.name}/{rec.version}")
    store.close()
    print(
        f"site: {site.users.height} users, {site.items.height} items, {site.events.height} events; "
        f"GLM trained and {len(users)} users scored in {time.perf_counter() - t0:.1f} s"
    )
    return url, model, users, site.items["item_id"].to_list()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(url: str, root: Path, port: int, log: IO[bytes]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "FEEDRANK_API_KEYS": f"{KEY}=admin", "FEEDRANK_RELOAD_SECONDS": "3600"}
    cmd = [sys.executable, "-m", "feedrank.cli.main", "--store", url, "--models-dir",
           str(root / "bench.models"), "serve", "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError((root / "server.log").read_text()[-2000:])
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not start within 120 s")


def events_batches(users: list[str], items: list[str], n_batches: int) -> list[bytes]:
    rng = random.Random(11)
    types = ["view", "click", "like", "impression"]
    out = []
    for b in range(n_batches):
        batch = [
            {"event_id": f"bench-{b}-{i}", "user_id": rng.choice(users), "item_id": rng.choice(items),
             "type": rng.choice(types), "timestamp": 1767225600 + b * 100 + i, "device": "mobile"}
            for i in range(100)
        ]  # fmt: skip
        out.append(json.dumps(batch).encode())
    return out


def cpu_seconds(pid: int) -> float:
    """The server's user + system CPU time: its cost per request, whatever else the machine
    is running (latency on a shared machine is not)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def report(label: str, r: LoadResult, cpu_s: float | None = None) -> None:
    cpu = f"  server CPU {cpu_s / r.sent * 1e3:5.2f} ms/req" if cpu_s is not None else ""
    print(
        f"{label:<38} {r.rate:>5.0f} req/s offered  {r.throughput:>6.0f} req/s done  "
        f"p50 {r.pct(50):6.2f} ms  p99 {r.pct(99):6.2f} ms  max {r.latencies_ms.max():6.1f} ms  "
        f"ok {r.ok}/{r.sent}{cpu}"
    )


async def run(
    port: int, pid: int, model: Any, users: list[str], items: list[str], small: bool
) -> int:
    seconds = 3 if small else 10
    rng = random.Random(5)
    failures = []

    def paths(n: int, who: list[str] = users) -> list[str]:
        return [f"/users/{rng.choice(who)}/recommendations?k=10" for _ in range(n)]

    # Same answers: the served generation's top-10 is the library's own, cold users included.
    service = RecommendationService(model)
    sample = rng.sample(users, 20)
    for u in sample:
        got = await fetch(port, f"/users/{u}/recommendations?k=10")
        mine = service.recommend([u], 10)["item_id"].to_list()
        assert got["served_from"] == "generation", got
        assert [x["item_id"] for x in got["items"]] == mine, (u, got, mine)  # type: ignore[union-attr]
    print(f"same answers: served top-10 == RecommendationService top-10 for {len(sample)} users")

    await open_loop(port, paths(200), 200)  # warm-up
    results = {}
    for rate in (200, 500):
        c0 = cpu_seconds(pid)
        r = await open_loop(port, paths(rate * seconds), rate)
        report("recommendations over HTTP", r, cpu_seconds(pid) - c0)
        results[rate] = r

    # Peer: the library's service scored per request, in process (no HTTP, no generation).
    lat = []
    for u in rng.sample(users, 100 if small else 200):
        t0 = time.perf_counter()
        service.recommend([u], 10)
        lat.append((time.perf_counter() - t0) * 1e3)
    peer = np.array(lat)
    p50 = float(np.percentile(peer, 50))
    print(
        f"{'peer: RecommendationService per call':<38} in process, sequential          "
        f"p50 {p50:6.2f} ms  p99 {np.percentile(peer, 99):6.2f} ms"
    )
    print(f"ratio p50 peer / HTTP at 200 req/s: {p50 / results[200].pct(50):.1f}x")

    n_batches = 50 if small else 300
    batches = events_batches(users, items, n_batches)
    c0 = cpu_seconds(pid)
    secs, stored = await ingest(port, batches)
    ingest_cpu = cpu_seconds(pid) - c0
    ev_s = n_batches * 100 / secs
    print(
        f"ingestion: {n_batches} batches of 100 events in {secs:.2f} s = {ev_s:,.0f} events/s "
        f"({stored} new); server CPU {ingest_cpu / n_batches * 1e3:.1f} ms per batch"
    )

    # A user who just acted: the next request re-scores them live on their fresh history.
    fresh_users = rng.sample(users, 30 if small else 100)
    first = []
    conn = await Conn.open(port)
    for n, u in enumerate(fresh_users):
        body = json.dumps({"event_id": f"fresh-{n}", "user_id": u, "item_id": items[n % len(items)],
                           "type": "like"}).encode()  # fmt: skip
        await conn.request("POST", "/events", body)
        t0 = time.perf_counter()
        await conn.request("GET", f"/users/{u}/recommendations?k=10")
        first.append((time.perf_counter() - t0) * 1e3)
    conn.close()
    f = np.array(first)
    print(
        f"{'first request after a fresh event':<38} sequential (live re-score)       "
        f"p50 {np.percentile(f, 50):6.2f} ms  p99 {np.percentile(f, 99):6.2f} ms"
    )
    c0 = cpu_seconds(pid)
    fr = await open_loop(port, paths(200 * seconds, fresh_users), 200)
    report("then the same users (live, cached)", fr, cpu_seconds(pid) - c0)

    p99 = results[200].pct(99)
    if p99 > FLOOR_P99_MS:
        failures.append(f"p99 at 200 req/s is {p99:.1f} ms > {FLOOR_P99_MS} ms")
    if ev_s < FLOOR_EVENTS_S:
        failures.append(f"ingestion {ev_s:,.0f} events/s < {FLOOR_EVENTS_S:,.0f}")
    print("floors:", "met" if not failures else "; ".join(failures))
    print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()} on {os.cpu_count()} cores")
    return 1 if failures and not small else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--small", action="store_true", help="a tiny site, to smoke-test in seconds"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="feedrank-bench-api-") as tmp:
        root = Path(tmp)
        url, model, users, items = build(root, args.small)
        port = free_port()
        with (root / "server.log").open("wb") as log:
            return serve_and_load(url, root, port, log, model, users, items, args.small)


def serve_and_load(
    url: str,
    root: Path,
    port: int,
    log: IO[bytes],
    model: Any,
    users: list[str],
    items: list[str],
    small: bool,
) -> int:
    proc = start_server(url, root, port, log)
    try:
        print(f"server: pid {proc.pid} on 127.0.0.1:{port} ({os.cpu_count()} cores)")
        return asyncio.run(asyncio.wait_for(run(port, proc.pid, model, users, items, small), 600))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    sys.exit(main())
