"""One real OpenSearch node per test session, shared by the pytest-xdist workers.

The node is tools/opensearch (a single-node OpenSearch 2.19 in one JVM, built by Maven). The
first worker that needs it starts it; each user is counted in a state directory under the
session's shared temporary root, behind a file lock; the last one to leave stops it. The node
also follows the session's main pytest process (`--exit-with`), so a killed run leaves nothing.
FEEDRANK_OPENSEARCH_URL points the tests at a server of your own instead (nothing is started).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NODE_DIR = ROOT / "tools" / "opensearch"
BUILT = NODE_DIR / "target" / "classes" / "feedrank" / "opensearch" / "TestNode.class"
URL_VAR = "FEEDRANK_OPENSEARCH_URL"


class NodeUnavailable(Exception):
    """No node can be started here (the message says what is missing); the tests skip."""


def store_url(url: str) -> str:
    """`http://host:port` or `opensearch+http://host:port` -> the store URL form."""
    return url if url.startswith("opensearch+") else f"opensearch+{url}"


def missing_tools() -> list[str]:
    return [tool for tool in ("java", "mvn") if shutil.which(tool) is None]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _alive(state: Path) -> bool:
    try:
        os.kill(int((state / "pid").read_text()), 0)
    except (OSError, ValueError):
        return False
    return (state / "url").exists()


def _run(args: list[str], what: str) -> str:
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-15:]
        raise RuntimeError(f"{what} must succeed; it exited {done.returncode}:\n" + "\n".join(tail))
    return done.stdout


def _build() -> None:
    if not BUILT.exists():
        _run(["mvn", "-B", "-q", "-f", str(NODE_DIR / "pom.xml"), "process-classes"], "mvn")


class SharedNode:
    """Reference-counted use of one node from several processes (the xdist workers)."""

    def __init__(self, shared_dir: Path, session_pid: int) -> None:
        self.state = shared_dir / "opensearch-node"
        self.lock = shared_dir / "opensearch-node.lock"
        self.session_pid = session_pid
        self.url: str | None = None

    def _users(self) -> int:
        try:
            return int((self.state / "users").read_text())
        except (OSError, ValueError):
            return 0

    def acquire(self) -> str:
        with _locked(self.lock):
            if not _alive(self.state):
                _build()
                start = [str(NODE_DIR / "start.sh"), str(self.state)]
                out = _run([*start, "--exit-with", str(self.session_pid)], "the node's start.sh")
                url = out.strip().splitlines()[-1]
            else:
                url = (self.state / "url").read_text().strip()
            self.state.joinpath("users").write_text(str(self._users() + 1))
        self.url = url
        return url

    def release(self) -> None:
        with _locked(self.lock):
            users = max(self._users() - 1, 0)
            self.state.joinpath("users").write_text(str(users))
            if users == 0:
                _run([str(NODE_DIR / "stop.sh"), str(self.state)], "the node's stop.sh")
