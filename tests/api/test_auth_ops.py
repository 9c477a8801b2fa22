"""Keys and scopes, refusing to start without keys, health, metrics, the serve command."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from feedrank.api import create_app
from feedrank.api.auth import KeyRing
from feedrank.cli.main import app as cli
from feedrank.exceptions import ConfigError

from .conftest import ADMIN, INGEST, READ, settings_for
from .sitebuild import store_url


def test_keys_and_scopes(client: TestClient) -> None:
    url = "/users/u00001/recommendations"
    assert client.get(url).status_code == 401
    assert client.get(url, headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.get(url, headers=INGEST).status_code == 403
    assert client.get(url, headers=READ).status_code == 200
    assert client.get(url, headers=ADMIN).status_code == 200  # admin implies every scope
    ev = {"user_id": "k-u", "item_id": "p00001", "type": "click"}
    assert client.post("/events", json=ev, headers=READ).status_code == 403
    assert client.post("/events", json=ev, headers={"X-API-Key": "ri-key"}).status_code == 200
    assert client.get("/health").status_code == 200  # no key needed


def test_keys_never_logged(
    make_client,
    caplog: pytest.LogCaptureFixture,  # type: ignore[no-untyped-def]
) -> None:
    caplog.set_level(logging.DEBUG)
    with make_client() as client:
        client.get("/users/u00001/recommendations", headers={"X-API-Key": "secret-guess-123"})
        client.get("/users/u00001/recommendations", headers=READ)
        metrics = client.get("/metrics", headers=READ).text
    text = caplog.text + metrics
    assert "secret-guess-123" not in text and "r-key" not in text


def test_key_specs_are_checked_without_echoing_keys(tmp_path: Path) -> None:
    ring = KeyRing.load("a=read;b=ingest,admin", None, False)
    assert ring.scopes_of("b") == {"ingest", "admin"} and ring.scopes_of("c") is None
    with pytest.raises(ConfigError, match="scopes must be among") as exc:
        KeyRing.parse("topsecret=reed")
    assert "topsecret" not in str(exc.value)
    f = tmp_path / "keys"
    f.write_text("# ops keys\nfilekey=read\n")
    assert KeyRing.load(None, f, False).scopes_of("filekey") == {"read"}


def test_refuses_to_start_without_keys_unless_insecure(site: Path) -> None:
    with pytest.raises(ConfigError, match="--insecure"):
        create_app(settings_for(site, keys_spec=None))
    with TestClient(create_app(settings_for(site, keys_spec=None, insecure=True))) as c:
        assert c.get("/users/u00001/recommendations").status_code == 200


def test_serve_command_refuses_without_keys(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEEDRANK_API_KEYS", raising=False)
    result = CliRunner().invoke(cli, ["--store", store_url(site), "serve"])
    assert result.exit_code == 2
    assert "no API keys configured" in result.output


def test_metrics_prometheus_text(client: TestClient) -> None:
    client.get("/users/u00001/recommendations", headers=READ)
    client.post("/events", json={"user_id": "m-u", "type": "clik"}, headers=INGEST)
    r = client.get("/metrics", headers=READ)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert (
        'feedrank_http_requests_total{method="GET",route="/users/{user_id}/recommendations",status="200"} 1.0'
        in text
    )
    assert 'feedrank_events_total{outcome="rejected"} 1.0' in text
    assert "feedrank_http_request_seconds_bucket" in text
    assert "feedrank_active_generation 1.0" in text


def test_acknowledged_writes_are_fsynced(client: TestClient) -> None:
    """The writer thread's SQLite connection commits with synchronous=FULL (2)."""
    rt = client.app.state.runtime  # type: ignore[attr-defined]

    def level() -> int:
        return int(rt.store._conn().execute("PRAGMA synchronous").fetchone()[0])

    assert rt.writer.submit(level).result(timeout=10) == 2
