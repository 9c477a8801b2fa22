"""An in-process app (FastAPI's TestClient runs the real lifespan) over a copy of a small
synthetic site with a trained GLM and an active generation."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():  # starlette's note about a future httpx, not about us
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

from feedrank.api import create_app
from feedrank.api.settings import ApiSettings

from .sitebuild import DB, MODELS, build_site, copy_site

KEYS = "r-key=read;i-key=ingest;a-key=admin;ri-key=read,ingest"
READ = {"X-API-Key": "r-key"}
INGEST = {"X-API-Key": "i-key"}
ADMIN = {"X-API-Key": "a-key"}


@pytest.fixture(scope="session")
def site_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_site(tmp_path_factory.mktemp("template"))


@pytest.fixture
def site(site_template: Path, tmp_path: Path) -> Path:
    return copy_site(site_template, tmp_path / "site")


def settings_for(site: Path, **kw: Any) -> ApiSettings:
    return ApiSettings(
        store_url=f"sqlite:///{site / DB}",
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
