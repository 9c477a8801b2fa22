"""Issue 12: store faults are real faults of a real filesystem (a small ext4 image the test
loop-mounts: filled up, then the store's files made immutable, which fails writes even through
open files), answered 503 with Retry-After while /health names the fault, and the server takes
writes again by itself once the fault clears (no restart)."""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from feedrank.api import create_app
from feedrank.store import open_store

from .conftest import INGEST, READ, settings_for
from .sitebuild import copy_site, store_url

SIZE_MB = 64


def _run(*args: str) -> bool:
    return subprocess.run(args, capture_output=True).returncode == 0


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    image, mnt = tmp_path / "fs.img", tmp_path / "fs"
    mnt.mkdir()
    with image.open("wb") as fh:
        fh.truncate(SIZE_MB << 20)
    if not (
        _run("mkfs.ext4", "-q", "-F", "-m", "0", str(image))
        and _run("mount", "-o", "loop", str(image), str(mnt))
    ):
        pytest.skip("loop-mounting an ext4 image needs root and mkfs.ext4")
    try:
        yield mnt
    finally:
        _run("chattr", "-R", "-i", str(mnt))
        _run("umount", "-l", str(mnt))


def _fill(path: Path) -> None:
    """Write until the filesystem says it is full (ENOSPC)."""
    chunk = b"\0" * (1 << 20)
    with path.open("wb") as fh:
        try:
            while True:
                fh.write(chunk)
                fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def _event(n: int) -> dict[str, object]:
    return {"event_id": f"fault-{n}", "user_id": "fault-u", "item_id": "p00001", "type": "click"}


def _write_until_fault(client: TestClient, acked: list[str]) -> None:
    """Events until one is refused (a full disk shows when a write needs a new block), then
    the fault as a client sees it."""
    for _ in range(2000):
        event = _event(len(acked) + 1000)
        r = client.post("/events", json=event, headers=INGEST)
        if r.status_code != 200:
            break
        acked.append(str(event["event_id"]))
    assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
    assert "/tmp" not in r.text and "site.db" not in r.text  # no path in the answer
    h = client.get("/health")
    assert h.status_code == 503 and h.json()["status"] == "unavailable", h.text


def test_full_disk_and_read_only_are_503_and_recovered_without_restart(
    small_fs: Path, site_template: Path
) -> None:
    site = copy_site(site_template, small_fs / "site")
    acked: list[str] = []
    with TestClient(create_app(settings_for(site)), raise_server_exceptions=False) as client:
        # Disk full, the first fault this writer meets.
        _fill(small_fs / "filler")
        _write_until_fault(client, acked)
        assert client.get("/health").json()["fault"] == "writes"
        assert client.get("/users/u0001/recommendations", headers=READ).status_code == 200
        (small_fs / "filler").unlink()
        assert client.get("/health").status_code == 200  # the health check's write went in
        assert client.post("/events", json=_event(1), headers=INGEST).status_code == 200
        acked.append("fault-1")
        # Read-only files: writes fail even through the connections already open. (Not the
        # -shm index: SQLite maps it, and a write to an immutable mapped page is a SIGBUS.)
        files = [str(site / "site.db"), str(site / "site.db-wal")]
        assert _run("chattr", "+i", *files)
        _write_until_fault(client, acked)
        assert _run("chattr", "-i", *files)
        assert client.post("/events", json=_event(2), headers=INGEST).status_code == 200
        acked.append("fault-2")
        assert client.get("/health").json()["status"] == "ok"
        metrics = client.get("/metrics", headers=READ).text
        assert 'route="/events",status="503"' in metrics  # counted like any answer
    with open_store(store_url(site)) as store:
        ids = store.events(user_ids=["fault-u"])["event_id"].to_list()
    assert sorted(ids) == sorted(acked)  # every 200 stored, no 503 stored
