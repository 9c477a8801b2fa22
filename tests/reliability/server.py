"""A real server process on 127.0.0.1 and a free port: started with a deadline, always killed
(SIGKILL if it will not stop) when the test is done.

Started as uvicorn runs the app factory (`uvicorn --factory
feedrank.api.app:create_app_from_env`, configured by FEEDRANK_* variables), or, with
`cli=True`, as `feedrank serve`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

KEY = "rel-admin"
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(
        self, store_url: str, models_dir: Path, log: Path, cli: bool = False, **env: str
    ) -> None:
        self.store_url, self.models_dir, self.log_path, self.env = store_url, models_dir, log, env
        self.cli = cli
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def _command(self) -> list[str]:
        where = ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "info"]
        if self.cli:
            return [sys.executable, "-m", "feedrank.cli.main", "--store", self.store_url,
                    "--models-dir", str(self.models_dir), "serve", *where]  # fmt: skip
        return [sys.executable, "-m", "uvicorn", "--factory",
                "feedrank.api.app:create_app_from_env", "--no-access-log", *where]  # fmt: skip

    def start(self) -> Server:
        self.port = free_port()
        env = {
            **os.environ,
            "FEEDRANK_API_KEYS": f"{KEY}=admin",
            "FEEDRANK_STORE": self.store_url,
            "FEEDRANK_MODELS": str(self.models_dir),
            **self.env,
        }
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self._command(), stdout=self._log, stderr=subprocess.STDOUT, env=env
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log()}")
            try:
                # ours, not another test's server that took the port since free_port() let it go
                ours = f"127.0.0.1:{self.port}" in self.log()
                if ours and httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass  # not listening yet
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not answer /health within {START_TIMEOUT}s: {self.log()}")

    def rss_bytes(self) -> int:
        """The process's resident set size now (Linux /proc)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS in /proc/<pid>/status")

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill9()
        if getattr(self, "_log", None) is not None:
            self._log.close()

    def full_log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log(self) -> str:
        return self.full_log()[-3000:]

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"X-API-Key": KEY}, timeout=30.0)
