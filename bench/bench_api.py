"""The HTTP service, new design beside the old one in the same run: start-up time, memory (RSS)
with a 0.5M- and a 5M-event store of the same catalogue, recommendation latency at a fixed
request rate on loopback, event ingestion in batches of 100, and the live path (a user who just
acted).

    .venv/bin/python bench/bench_api.py [--small]

One synthetic site (feedrank.datasets.demo: 30,000 users, 1,000 items, 28 days, ~5.1M events)
is generated once. The large store holds all of it; the small store holds the users u00001 ..
u03000 and their events (~0.5M), with the same items. Each design imports both stores with its
own code, trains one GLM (its default model) on the small store, serves that same model from
both stores, and scores every user of each store into an active generation (as a site runs it:
the generation is the fast path). The new design is this checkout (`feedrank.*` as imported
here); the old design is the checkout before the redesign, in /work/baseline with its own venv
(FEEDRANK_BASELINE), driven by a script run with its interpreter.

Each of the four servers (`python -m feedrank.cli.main ... serve`, its own process, default
settings) is then measured the same way, one after the other:
- start-up: from the process start until GET /health answers 200 (uvicorn answers only after
  the app has loaded its state);
- RSS (VmRSS of /proc/PID/status) after start, after 10,000+ recommendations, at the end; the
  peak (VmHWM);
- the served top-10 of 20 users equals the in-process RecommendationService's (checked);
- open-loop load (requests leave on a fixed schedule whatever the responses do; latency counts
  from the scheduled time, so a stalled server shows up as latency, not as a lower rate): a
  warm-up, then 200 req/s, then 500 req/s, random users of the store, k=10;
- ingestion: 4 clients post batches of 100 events back to back;
- the live path: POST one event for a user, then GET their recommendations (sequential); then
  the same users at 200 req/s, twice: right after those events (the new design's live cache is
  valid while the catalogue is unchanged, and every applied event makes a new catalogue, so
  each user is scored again once), and again with nothing new (from the live cache).

Floors (issue 11): RSS with the 5M store at most 1.3x the RSS with the 0.5M store, after start
and after the recommendations; start-up under 3 s; p99 at most 10 ms at 500 req/s. A verdict
per floor is printed; at the default size a missed floor exits 1. Servers are always killed."""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import polars as pl
from _common import Row, check, print_rows, print_table

KEY = "bench-key"
BASELINE = Path(os.environ.get("FEEDRANK_BASELINE", "/work/baseline"))
FLOOR_RSS_RATIO = 1.3
FLOOR_STARTUP_S = 3.0
FLOOR_P99_MS = 10.0
FLOOR_RATE = 500
CHECK_USERS = 20


@dataclass(frozen=True)
class Plan:
    n_users: int
    n_items: int
    days: int
    small_users: int  # the small store: users u00001 .. u{small_users}
    test_days: int
    warmup: int  # requests at 200/s before the measured runs
    seconds_200: float
    seconds_500: float  # rate x seconds = the recommendations before "RSS after"
    batches: int  # ingestion batches of 100 events
    fresh_users: int
    seconds_fresh: float  # each of the two runs over the users who just acted


DEFAULT = Plan(30_000, 1_000, 28, 3_000, 7, 200, 10, 20, 300, 100, 5)
SMALL = Plan(1_000, 200, 14, 100, 3, 100, 1, 2, 20, 10, 1)


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
    cpu_s: float = float("nan")  # the server's CPU seconds during the run

    @property
    def throughput(self) -> float:
        return self.ok / self.seconds

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q))

    @property
    def cpu_ms_per_req(self) -> float:
        return self.cpu_s / self.sent * 1e3


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


async def get_json(port: int, path: str) -> dict[str, Any]:
    conn = await Conn.open(port)
    try:
        status, body = await conn.request("GET", path)
    finally:
        conn.close()
    if status != 200:
        raise RuntimeError(f"GET {path} answered {status}: {body[:300]!r}")
    out: dict[str, Any] = json.loads(body)
    return out


# -- the site and the stores -------------------------------------------------------------------
def write_site(root: Path, plan: Plan) -> dict[str, int]:
    """The synthetic site as Parquet files both designs import; the sizes of the two stores."""
    from feedrank.datasets.demo import generate_site

    site = generate_site(n_users=plan.n_users, n_items=plan.n_items, days=plan.days, seed=7)
    site.users.write_parquet(root / "users.parquet")
    site.items.write_parquet(root / "items.parquet")
    site.events.write_parquet(root / "events.parquet")
    last = f"u{plan.small_users:05d}"
    n_small = site.events.filter(pl.col("user_id") <= last).height
    return {"small": n_small, "large": site.events.height}


def store_specs(root: Path, plan: Plan, design: str) -> list[dict[str, Any]]:
    last = f"u{plan.small_users:05d}"
    return [
        {"size": "small", "url": f"sqlite:///{root / design}-small.db", "last_user": last},
        {"size": "large", "url": f"sqlite:///{root / design}-large.db", "last_user": None},
    ]


def site_parts(root: Path, last_user: str | None) -> dict[str, pl.DataFrame]:
    users = pl.read_parquet(root / "users.parquet")
    events = pl.read_parquet(root / "events.parquet")
    if last_user is not None:
        users = users.filter(pl.col("user_id") <= last_user)
        events = events.filter(pl.col("user_id") <= last_user)
    return {
        "users": users,
        "items": pl.read_parquet(root / "items.parquet"),
        "interactions": events,
    }


def setup_new(root: Path, plan: Plan, sample: list[str]) -> dict[str, Any]:
    """This checkout: import each store, train the GLM on the small one (registry champion,
    with its fallback), score every user of each store into a generation; the in-process
    top-10 of the sample users (what the server must answer)."""
    from feedrank.io import import_frame
    from feedrank.pipeline.registry import Registry
    from feedrank.pipeline.score import score_all, serving
    from feedrank.pipeline.train import train
    from feedrank.settings import Settings
    from feedrank.store import open_store
    from feedrank.views.site import read_site

    registry = Registry(root / "new.models")
    out: dict[str, Any] = {}
    model = fallback = label = None
    for spec in store_specs(root, plan, "new"):
        parts = site_parts(root, spec["last_user"])
        store = open_store(spec["url"])
        t0 = time.perf_counter()
        for kind, frame in parts.items():
            import_frame(store, kind, frame, strict=True)  # type: ignore[arg-type]
        t_import = time.perf_counter() - t0
        del parts
        t_train = float("nan")
        if model is None:
            t0 = time.perf_counter()
            result = train(read_site(store), Settings(), "glm", test_days=plan.test_days)
            t_train = time.perf_counter() - t0
            rec = registry.save(result.model, "glm", fallback=result.fallback)
            label = f"{rec.name}/{rec.version}"
            registry.promote(label, "bench")
            model, fallback = result.model, result.fallback
        t0 = time.perf_counter()
        _, recs = score_all(store, model, label or "", fallback, 100)
        t_score = time.perf_counter() - t0
        service = serving(store, model, fallback)
        answers = {u: service.recommend([u], 10)["item_id"].to_list() for u in sample}
        store.close()
        out[spec["size"]] = {
            "import_s": t_import,
            "train_s": t_train,
            "score_s": t_score,
            "scored_users": recs["user_id"].n_unique(),
            "answers": answers,
        }
    return out


# The old design, run by its own interpreter in its own checkout (its API before the redesign:
# feedrank.data.io, store.load(), train_glm, model.serve_with(data)).
OLD_SETUP = r"""
import json, sys, time
from pathlib import Path
import polars as pl
from feedrank.config import Settings
from feedrank.data.io import import_frame
from feedrank.pipeline.recommend import RecommendationService
from feedrank.pipeline.registry import Registry
from feedrank.pipeline.train import train_glm
from feedrank.store import open_store

cfg = json.loads(Path(sys.argv[1]).read_text())
root = Path(cfg["root"])
registry = Registry(root / "old.models")
out, model, label = {}, None, None
for spec in cfg["stores"]:
    users = pl.read_parquet(root / "users.parquet")
    events = pl.read_parquet(root / "events.parquet")
    if spec["last_user"] is not None:
        users = users.filter(pl.col("user_id") <= spec["last_user"])
        events = events.filter(pl.col("user_id") <= spec["last_user"])
    parts = {"users": users, "items": pl.read_parquet(root / "items.parquet"),
             "interactions": events}
    store = open_store(spec["url"])
    t0 = time.perf_counter()
    for kind, frame in parts.items():
        import_frame(store, kind, frame, strict=True)
    t_import = time.perf_counter() - t0
    del parts, users, events
    data = store.load()
    t_train = float("nan")
    if model is None:
        t0 = time.perf_counter()
        model = train_glm(data, Settings(), test_days=cfg["test_days"]).model
        t_train = time.perf_counter() - t0
        rec = registry.save(model, "glm")
        label = f"{rec.name}/{rec.version}"
    t0 = time.perf_counter()
    model.serve_with(data)
    service = RecommendationService(model)
    ids = data.users["user_id"].to_list()
    recs = service.recommend(ids, 100)
    store.write_generation(recs, label)
    t_score = time.perf_counter() - t0
    answers = {u: service.recommend([u], 10)["item_id"].to_list() for u in cfg["sample"]}
    store.close()
    out[spec["size"]] = {"import_s": t_import, "train_s": t_train, "score_s": t_score,
                         "scored_users": recs["user_id"].n_unique(), "answers": answers}
    del data, recs, service
Path(cfg["out"]).write_text(json.dumps(out))
"""


def setup_old(root: Path, plan: Plan, sample: list[str]) -> dict[str, Any]:
    cfg = {
        "root": str(root),
        "stores": store_specs(root, plan, "old"),
        "test_days": plan.test_days,
        "sample": sample,
        "out": str(root / "old-setup.json"),
    }
    (root / "old-setup-in.json").write_text(json.dumps(cfg))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [str(BASELINE / ".venv/bin/python"), "-c", OLD_SETUP, str(root / "old-setup-in.json")],
        cwd=BASELINE,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the old design's set-up failed:\n{done.stderr[-3000:]}")
    out: dict[str, Any] = json.loads((root / "old-setup.json").read_text())
    return out


# -- one server --------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def status_kb(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile of a process, in kB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[key] = int(rest.split()[0])
    return out


def cpu_seconds(pid: int) -> float:
    """The server's user + system CPU time: its cost per request, whatever else the machine
    is running (latency on a shared machine is not)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def healthy(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/health")
            return conn.getresponse().status == 200
        finally:
            conn.close()
    except OSError:
        return False


def start_server(
    design: str, url: str, models: Path, port: int, log: IO[bytes]
) -> tuple[subprocess.Popen[bytes], float]:
    """The server process and its start-up seconds (process start to /health 200)."""
    env = {**os.environ, "FEEDRANK_API_KEYS": f"{KEY}=admin"}
    if design == "old":
        python, cwd = str(BASELINE / ".venv/bin/python"), str(BASELINE)
        env.pop("PYTHONPATH", None)
    else:
        python, cwd = sys.executable, os.getcwd()  # PYTHONPATH passed on: this checkout
    cmd = [python, "-m", "feedrank.cli.main", "--store", url, "--models-dir", str(models),
           "serve", "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=log)
    deadline = t0 + 300
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the {design} server exited with {proc.returncode}")
        if healthy(port):
            return proc, time.perf_counter() - t0
        time.sleep(0.02)
    stop(proc)
    raise RuntimeError(f"the {design} server did not answer /health within 300 s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=15)


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


@dataclass
class Measured:
    design: str
    size: str
    events: int
    startup_s: float = float("nan")
    rss_start: dict[str, int] = field(default_factory=dict)
    rss_after: dict[str, int] = field(default_factory=dict)
    rss_end: dict[str, int] = field(default_factory=dict)
    recs_before_rss: int = 0
    loads: dict[int, LoadResult] = field(default_factory=dict)
    ingest_s: float = float("nan")
    ingested: int = 0  # new events stored
    ingest_events: int = 0  # events posted
    ingest_cpu_ms: float = float("nan")
    fresh_ms: np.ndarray = field(default_factory=lambda: np.zeros(0))
    fresh_loads: list[LoadResult] = field(default_factory=list)  # after the events, again


async def drive(
    port: int,
    pid: int,
    m: Measured,
    plan: Plan,
    users: list[str],
    items: list[str],
    answers: dict[str, list[str]],
) -> None:
    rng = random.Random(5)

    def paths(n: int, who: list[str] = users) -> list[str]:
        return [f"/users/{rng.choice(who)}/recommendations?k=10" for _ in range(n)]

    # Same answers: the served top-10 is the in-process service's (generation, seen removed).
    same = True
    for u, mine in answers.items():
        got = await get_json(port, f"/users/{u}/recommendations?k=10")
        same &= got["served_from"] == "generation"
        same &= [x["item_id"] for x in got["items"]] == mine
    check(
        same,
        f"{m.design} design, {m.size} store: HTTP top-10 == in-process for {len(answers)} users",
    )

    async def run(rate: int, ps: list[str]) -> LoadResult:
        c0 = cpu_seconds(pid)
        r = await open_loop(port, ps, rate)
        r.cpu_s = cpu_seconds(pid) - c0
        return r

    n = len(answers)
    await open_loop(port, paths(plan.warmup), 200)
    n += plan.warmup
    for rate, secs in ((200, plan.seconds_200), (FLOOR_RATE, plan.seconds_500)):
        m.loads[rate] = await run(rate, paths(int(rate * secs)))
        n += m.loads[rate].sent
    m.recs_before_rss = n
    m.rss_after = status_kb(pid)

    batches = events_batches(users, items, plan.batches)
    c0 = cpu_seconds(pid)
    m.ingest_events = plan.batches * 100
    m.ingest_s, m.ingested = await ingest(port, batches)
    m.ingest_cpu_ms = (cpu_seconds(pid) - c0) / plan.batches * 1e3

    # A user who just acted: the next request scores them live on their fresh history.
    fresh_users = rng.sample(users, plan.fresh_users)
    first = []
    conn = await Conn.open(port)
    for i, u in enumerate(fresh_users):
        body = json.dumps({"event_id": f"fresh-{i}", "user_id": u, "item_id": items[i % len(items)],
                           "type": "like"}).encode()  # fmt: skip
        await conn.request("POST", "/events", body)
        t0 = time.perf_counter()
        status, _ = await conn.request("GET", f"/users/{u}/recommendations?k=10")
        first.append((time.perf_counter() - t0) * 1e3)
        if status != 200:
            raise RuntimeError(f"live recommendation answered {status}")
    conn.close()
    m.fresh_ms = np.array(first)
    for _ in range(2):
        m.fresh_loads.append(await run(200, paths(int(200 * plan.seconds_fresh), fresh_users)))
    m.rss_end = status_kb(pid)


def measure(
    root: Path,
    design: str,
    size: str,
    events: int,
    plan: Plan,
    answers: dict[str, list[str]],
) -> Measured:
    url = f"sqlite:///{root / design}-{size}.db"
    users = pl.read_parquet(root / "users.parquet")["user_id"].to_list()
    if size == "small":
        users = [u for u in users if u <= f"u{plan.small_users:05d}"]
    items = pl.read_parquet(root / "items.parquet")["item_id"].to_list()
    m = Measured(design, size, events)
    port = free_port()
    with (root / f"{design}-{size}.log").open("wb") as log:
        try:
            proc, m.startup_s = start_server(design, url, root / f"{design}.models", port, log)
        except RuntimeError:
            print((root / f"{design}-{size}.log").read_text()[-3000:], file=sys.stderr)
            raise
        try:
            time.sleep(1.0)  # let start-up garbage settle before reading RSS
            m.rss_start = status_kb(proc.pid)
            coro = drive(port, proc.pid, m, plan, users, items, answers)
            asyncio.run(asyncio.wait_for(coro, 900))
        finally:
            stop(proc)
    print(
        f"  {design} design, {size} store ({events:,} events): start-up {m.startup_s:.2f} s, "
        f"RSS {m.rss_start['VmRSS'] / 1024:.0f} -> {m.rss_after['VmRSS'] / 1024:.0f} MB, "
        f"p99 at {FLOOR_RATE}/s {m.loads[FLOOR_RATE].pct(99):.2f} ms "
        f"(load {os.getloadavg()[0]:.1f})",
        flush=True,
    )
    return m


# -- output ------------------------------------------------------------------------------------
def mb(kb: float) -> str:
    return f"{kb / 1024:,.0f}"


def report(res: dict[tuple[str, str], Measured], sizes: dict[str, int]) -> list[str]:
    """The tables; the floors the new design missed."""
    sizes_txt = {
        s: f"{n / 1e6:.2f}M events" if n >= 1e5 else f"{n:,} events" for s, n in sizes.items()
    }
    both = [(sizes_txt[s], res["old", s], res["new", s]) for s in ("small", "large")]

    # Seconds: the new design in the "feedrank" column, the old design as the peer.
    rows = [
        Row("start-up to /health 200", txt, n.startup_s, "old design", o.startup_s, 1, "starts/s")
        for txt, o, n in both
    ]
    rows += [
        Row("ingest, batches of 100 (4 clients)", txt, n.ingest_s, "old design", o.ingest_s,
            n.ingest_events, "events/s")
        for txt, o, n in both
    ]  # fmt: skip
    print_table("HTTP service: seconds, new design vs old design (same run)", rows)

    body: list[tuple[str, ...]] = []
    for key, what in (("rss_start", "RSS after start"), ("rss_after", "RSS after recs"),
                      ("rss_end", "RSS at the end"), ("VmHWM", "peak RSS (VmHWM)")):  # fmt: skip
        for txt, o, n in both:
            ov, nv = (o.rss_end[key], n.rss_end[key]) if key == "VmHWM" else (
                getattr(o, key)["VmRSS"], getattr(n, key)["VmRSS"])  # fmt: skip
            body.append((f"{what}, MB", txt, mb(ov), mb(nv), f"{ov / nv:.2f}x"))
        if key in ("rss_start", "rss_after"):
            ro, rn = ratios(res, key)
            body.append((f"  {what}: large / small store", "", f"{ro:.2f}x", f"{rn:.2f}x", ""))
    for txt, o, n in both:
        body.append(("  RssAnon / RssFile after recs, MB", txt,
                     f"{mb(o.rss_after['RssAnon'])} / {mb(o.rss_after['RssFile'])}",
                     f"{mb(n.rss_after['RssAnon'])} / {mb(n.rss_after['RssFile'])}", ""))  # fmt: skip
    for rate in (200, FLOOR_RATE):
        for txt, o, n in both:
            body += latency_rows(f"recs at {rate}/s", txt, o.loads[rate], n.loads[rate])
    for txt, o, n in both:
        of, nf = o.fresh_ms, n.fresh_ms
        body.append(("first rec after an event (sequential): p50 / p99 ms", txt,
                     f"{np.percentile(of, 50):.1f} / {np.percentile(of, 99):.1f}",
                     f"{np.percentile(nf, 50):.1f} / {np.percentile(nf, 99):.1f}",
                     f"{np.percentile(of, 50) / np.percentile(nf, 50):.2f}x"))  # fmt: skip
        for label, ol, nl in zip(("same users at 200/s, right after", "same users at 200/s, again"),
                                 o.fresh_loads, n.fresh_loads, strict=True):  # fmt: skip
            body += latency_rows(label, txt, ol, nl)
        body.append(("ingest: server CPU ms per batch of 100", txt, f"{o.ingest_cpu_ms:.1f}",
                     f"{n.ingest_cpu_ms:.1f}", f"{o.ingest_cpu_ms / n.ingest_cpu_ms:.2f}x"))  # fmt: skip
    recs = res["new", "large"].recs_before_rss
    print_rows(
        f"HTTP service: memory and latency ('after recs' = after {recs:,} recommendations)",
        ("what", "store", "old design", "new design", "old/new"),
        body,
    )

    missed: list[str] = []
    rs, ra = ratios(res, "rss_start")[1], ratios(res, "rss_after")[1]
    verdict(
        missed,
        rs <= FLOOR_RSS_RATIO,
        f"RSS after start, large / small store = {rs:.2f}x (floor <= {FLOOR_RSS_RATIO}x)",
    )
    verdict(
        missed,
        ra <= FLOOR_RSS_RATIO,
        f"RSS after {recs:,} recommendations, large / small store = {ra:.2f}x "
        f"(floor <= {FLOOR_RSS_RATIO}x)",
    )
    for txt, _, n in both:
        verdict(
            missed,
            n.startup_s < FLOOR_STARTUP_S,
            f"start-up with {txt} = {n.startup_s:.2f} s (floor < {FLOOR_STARTUP_S:g} s)",
        )
    for txt, o, n in both:  # the old design's p99 beside it: the machine's share of the tail
        p99, old_p99 = n.loads[FLOOR_RATE].pct(99), o.loads[FLOOR_RATE].pct(99)
        verdict(
            missed,
            p99 <= FLOOR_P99_MS,
            f"p99 at {FLOOR_RATE} req/s with {txt} = {p99:.2f} ms (floor <= {FLOOR_P99_MS:g} ms; "
            f"the old design in this run: {old_p99:.2f} ms)",
        )
    return missed  # fmt: skip


def latency_rows(what: str, size: str, o: LoadResult, n: LoadResult) -> list[tuple[str, ...]]:
    return [
        (f"{what}: p50 / p99 ms", size, f"{o.pct(50):.2f} / {o.pct(99):.2f}",
         f"{n.pct(50):.2f} / {n.pct(99):.2f}", f"{o.pct(99) / n.pct(99):.2f}x"),
        ("  done/s, ok, server CPU ms/req", size,
         f"{o.throughput:.0f}, {o.ok}/{o.sent}, {o.cpu_ms_per_req:.2f}",
         f"{n.throughput:.0f}, {n.ok}/{n.sent}, {n.cpu_ms_per_req:.2f}",
         f"{o.cpu_ms_per_req / n.cpu_ms_per_req:.2f}x"),
    ]  # fmt: skip


def ratios(res: dict[tuple[str, str], Measured], key: str) -> tuple[float, float]:
    def r(design: str) -> float:
        large = getattr(res[design, "large"], key)["VmRSS"]
        small = getattr(res[design, "small"], key)["VmRSS"]
        return float(large / small)

    return r("old"), r("new")


def verdict(missed: list[str], ok: bool, what: str) -> None:
    print(f"floor, new design: {what}: {'met' if ok else 'MISSED'}")
    if not ok:
        missed.append(what)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--small", action="store_true", help="a tiny site, to smoke-test in seconds"
    )
    args = parser.parse_args()
    plan = SMALL if args.small else DEFAULT
    if not (BASELINE / ".venv/bin/python").exists():
        raise SystemExit(f"the old design's checkout with its venv is needed: {BASELINE}")
    with tempfile.TemporaryDirectory(prefix="feedrank-bench-api-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        sizes = write_site(root, plan)
        sample_rng = random.Random(3)
        small_users = [f"u{i:05d}" for i in range(1, plan.small_users + 1)]
        sample = sample_rng.sample(small_users, CHECK_USERS)
        print(
            f"site: {plan.n_users:,} users, {plan.n_items:,} items, {plan.days} days; stores of "
            f"{sizes['small']:,} events (users u00001..u{plan.small_users:05d}) and "
            f"{sizes['large']:,} events, same items ({time.perf_counter() - t0:.1f} s)",
            flush=True,
        )
        setups = {"new": setup_new(root, plan, sample), "old": setup_old(root, plan, sample)}
        for design, s in setups.items():
            print(
                f"set-up, {design} design: import {s['small']['import_s']:.1f} s (small) / "
                f"{s['large']['import_s']:.1f} s (large); GLM trained on the small store in "
                f"{s['small']['train_s']:.1f} s; generations of {s['small']['scored_users']:,} / "
                f"{s['large']['scored_users']:,} users in {s['small']['score_s']:.1f} / "
                f"{s['large']['score_s']:.1f} s",
                flush=True,
            )
        res = {}
        for size in ("small", "large"):
            for design in ("new", "old"):
                answers = setups[design][size]["answers"]
                res[design, size] = measure(root, design, size, sizes[size], plan, answers)
        missed = report(res, sizes)
    print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()} on {os.cpu_count()} cores")
    if missed:
        print(f"floors missed by the new design: {len(missed)}")
    return 1 if missed and not args.small else 0


if __name__ == "__main__":
    sys.exit(main())
