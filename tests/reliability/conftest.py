"""Real server processes over copies of the small synthetic site (tests/api/sitebuild.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from api.sitebuild import MODELS, build_site, copy_site, store_url

from .server import Server


@pytest.fixture(scope="session")
def rel_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_site(tmp_path_factory.mktemp("rel_template"))


@pytest.fixture
def rel_site(rel_template: Path, tmp_path: Path) -> Path:
    return copy_site(rel_template, tmp_path / "site")


@pytest.fixture
def make_server(rel_site: Path, tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start servers on one store (e.g. before and after a kill); all stopped at the end."""
    started: list[Server] = []

    def make(cli: bool = False, **env: str) -> Server:
        n = len(started)
        s = Server(store_url(rel_site), rel_site / MODELS, tmp_path / f"server{n}.log", cli, **env)
        started.append(s)
        return s.start()

    yield make
    for s in started:
        s.stop()


@pytest.fixture
def shared(rel_template: Path, tmp_path: Path) -> Iterator[Server]:
    """A server with a small body limit (64 KiB), for the bad-input and fuzzing checks."""
    site = copy_site(rel_template, tmp_path / "shared")
    server = Server(
        store_url(site),
        site / MODELS,
        site.parent / "server.log",
        FEEDRANK_MAX_BODY_BYTES="65536",
    )
    try:
        yield server.start()
    finally:
        server.stop()
