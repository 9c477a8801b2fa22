"""An in-process app (FastAPI's TestClient runs the real lifespan) over a copy of a small
synthetic site with a trained GLM (and its fallback) and an active generation."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

with warnings.catch_warnings():  # starlette's note about a future httpx, not about us
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

from feedrank.api import create_app
from feedrank.api.settings import ApiSettings
from feedrank.store import Store, open_store

from .sitebuild import MODELS, build_site, copy_site, store_url

KEYS = "r-key=read;i-key=ingest;a-key=admin;ri-key=read,ingest"
READ = {"X-API-Key": "r-key"}
INGEST = {"X-API-Key": "i-key"}
ADMIN = {"X-API-Key": "a-key"}
DEADLINE = 10.0  # seconds: generous for "within a refresh" (0.5 s by default); never a pass bar
T = TypeVar("T")


def eventually(probe: Callable[[], T], ok: Callable[[T], bool], deadline: float = DEADLINE) -> T:
    """probe() until ok(result) or the deadline; returns the last result (the caller asserts on
    it, so a miss fails with what was seen)."""
    stop = time.monotonic() + deadline
    while True:
        got = probe()
        if ok(got) or time.monotonic() > stop:
            return got
        time.sleep(0.02)


@pytest.fixture(scope="session")
def site_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_site(tmp_path_factory.mktemp("template"))


@pytest.fixture
def site(site_template: Path, tmp_path: Path) -> Path:
    return copy_site(site_template, tmp_path / "site")


@pytest.fixture
def store(site: Path) -> Iterator[Store]:
    """The test's store, opened beside the server (as another writer or reader would)."""
    with open_store(store_url(site)) as s:
        yield s


def settings_for(site: Path, **kw: Any) -> ApiSettings:
    return ApiSettings(
        store_url=store_url(site),
        models_dir=str(site / MODELS),
        keys_spec=kw.pop("keys_spec", KEYS),
        **kw,
    )


@pytest.fixture
def make_client(site: Path) -> Callable[..., AbstractContextManager[TestClient]]:
    @contextmanager
    def make(**kw: Any) -> Iterator[TestClient]:
        with TestClient(create_app(settings_for(site, **kw))) as client:
            yield client

    return make


@pytest.fixture
def client(make_client: Callable[..., AbstractContextManager[TestClient]]) -> Iterator[TestClient]:
    with make_client() as c:
        yield c
