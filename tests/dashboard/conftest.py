"""One real server (uvicorn in a thread, on a free port, with its access log on) over the demo
store, shared by the dashboard's tests: they only read. Its log records are kept, so a test can
check that no key was written to them."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn

from feedrank.api import create_app
from feedrank.api.settings import ApiSettings

from .sitebuild import MODELS, build_site, store_url

ADMIN_KEY = "dash-admin-key-7f3a9c"
READ_KEY = "dash-read-key-51e0"
KEYS = f"{ADMIN_KEY}=admin;{READ_KEY}=read"
WARM_DEADLINE = 120.0  # seconds for the background analyses on a loaded machine; never a bar
PAGES = {
    "overview": "/dashboard",
    "models": "/dashboard/models",
    "model-glm": "/dashboard/models/glm",
    "experiments": "/dashboard/experiments",
    "insights": "/dashboard/insights",
    "users": "/dashboard/users?q=u0000",
    "user": "/dashboard/users/u00001",
}


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@dataclass
class Server:
    url: str
    log: _Keep
    root: Path
    admin: dict[str, str] = field(default_factory=lambda: {"X-API-Key": ADMIN_KEY})

    def client(self, **kw: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60.0, **kw)  # type: ignore[arg-type]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def demo_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_site(tmp_path_factory.mktemp("dashboard"))


@pytest.fixture(scope="session")
def server(demo_site: Path) -> Iterator[Server]:
    settings = ApiSettings(
        store_url=store_url(demo_site), models_dir=str(demo_site / MODELS), keys_spec=KEYS
    )
    port = _free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="info", access_log=True
    )
    srv = uvicorn.Server(config)
    keep = _Keep()
    keep.setFormatter(logging.Formatter("%(name)s %(message)s"))
    loggers = [
        logging.getLogger(n) for n in ("uvicorn", "uvicorn.access", "uvicorn.error", "feedrank")
    ]
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    # uvicorn configures its loggers when it starts: attach after that, before any request
    stop = time.monotonic() + 60
    while not srv.started and time.monotonic() < stop:
        time.sleep(0.05)
    if not srv.started:
        pytest.fail("the dashboard's test server did not start within 60 s")
    for lg in loggers:
        lg.addHandler(keep)
    s = Server(f"http://127.0.0.1:{port}", keep, demo_site)
    warm(s)
    yield s
    for lg in loggers:
        lg.removeHandler(keep)
    srv.should_exit = True
    thread.join(timeout=30)


def warm(s: Server) -> None:
    """Until every page's background analyses have finished (a page still computing says so
    and reloads itself); the pages are then measured as a user who comes back sees them."""
    stop = time.monotonic() + WARM_DEADLINE
    with s.client(headers=s.admin) as c:
        for path in PAGES.values():
            while True:
                r = c.get(path)
                if "data-reload-ms" not in r.text or time.monotonic() > stop:
                    break
                time.sleep(0.5)
