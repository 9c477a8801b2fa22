"""The dashboard in a real browser: Playwright driving Debian's Chromium (/usr/bin/chromium,
headless; `make setup` installs it, Playwright never downloads one). Every page loads with no
console error and no request leaving 127.0.0.1, every chart draws visible marks, the inspector
shows the items GET /users/{id}/recommendations answers, and a visit without a key gets the
login page (401). A screenshot of each page goes to screenshots/ (git-ignored) and each page's
load time (Navigation Timing) is printed, never asserted."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import ADMIN_KEY, PAGES, Server

pytestmark = pytest.mark.browser
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[2] / "screenshots"

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed: `make setup` installs the dev extra"
)
if not CHROMIUM.exists():
    pytest.skip(
        f"{CHROMIUM} is missing: `make setup` installs it (apt-get install chromium)",
        allow_module_level=True,
    )

LOAD_TIME = """() => {
  const [nav] = performance.getEntriesByType("navigation");
  return nav ? nav.loadEventEnd - nav.startTime : null;
}"""
CHART_MARKS = """() => [...document.querySelectorAll("figure.chart")].map(f => ({
  name: f.dataset.chart,
  marks: [...f.querySelectorAll(".mark")].filter(m => {
    const b = m.getBoundingClientRect();
    return b.width > 0 || b.height > 0;
  }).length,
}))"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium refuses root otherwise
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        yield b
        b.close()


class Watched:
    """A page whose console errors, uncaught errors and requests are recorded."""

    def __init__(self, browser: Any, base: str) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.base = base

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def signed_in(browser: Any, server: Server) -> Iterator[Watched]:
    w = Watched(browser, server.url)
    r = w.page.goto(f"{server.url}/dashboard?key={ADMIN_KEY}")  # exchanged for a cookie
    assert r is not None and r.status == 200
    assert ADMIN_KEY not in w.page.url
    yield w
    w.close()


def test_every_page_loads_clean_and_draws_its_charts(signed_in: Watched, server: Server) -> None:
    SHOTS.mkdir(exist_ok=True)
    page = signed_in.page
    times = {}
    for name, path in PAGES.items():
        signed_in.errors.clear()
        response = page.goto(server.url + path, wait_until="load")
        assert response is not None and response.status == 200, name
        assert page.title().endswith("feedrank")
        assert page.locator("header nav a").count() == 5
        charts = page.evaluate(CHART_MARKS)
        for chart in charts:
            assert chart["marks"] > 0, f"{name}: chart {chart['name']} drew nothing"
        if name not in ("users",):
            assert charts, f"{name} shows no chart"
        assert not signed_in.errors, f"{name}: console errors {signed_in.errors}"
        times[name] = page.evaluate(LOAD_TIME)
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    outside = [u for u in signed_in.requests if not u.startswith(server.url + "/")]
    assert not outside, f"requests left 127.0.0.1: {outside}"
    print("\npage load times (Navigation Timing, warm caches):")
    for name, ms in times.items():
        print(f"  {name:12s} {ms:7.0f} ms")


def test_inspector_shows_the_apis_items_for_each_model(signed_in: Watched, server: Server) -> None:
    page = signed_in.page
    with server.client(headers=server.admin) as api:
        for model in ("", "popularity"):
            page.goto(f"{server.url}/dashboard/users/u00007")
            page.select_option("select[name=model]", value=_label(api, model) if model else "")
            page.fill("input[name=k]", "8")
            page.click("button:has-text('Recommend')")
            page.wait_for_load_state("load")
            shown = page.locator("#recommendations tbody tr td:nth-child(2)").all_inner_texts()
            params = {"k": "8", **({"model": _label(api, model)} if model else {})}
            want = api.get("/users/u00007/recommendations", params=params).json()["items"]
            assert shown == [i["item_id"] for i in want]
            assert not signed_in.errors


def _label(api: Any, name: str) -> str:
    models = api.get("/models").json()["models"]
    newest = max((m for m in models if m["name"] == name), key=lambda m: m["version"])
    return f"{newest['name']}/{newest['version']}"


def test_a_visit_without_a_key_gets_the_login_page(browser: Any, server: Server) -> None:
    w = Watched(browser, server.url)
    try:
        r = w.page.goto(f"{server.url}/dashboard/experiments")
        assert r is not None and r.status == 401
        assert w.page.title().startswith("Sign in")
        w.page.fill("input[name=key]", ADMIN_KEY)
        w.page.click("button:has-text('Sign in')")
        w.page.wait_for_load_state("load")
        assert w.page.url == f"{server.url}/dashboard/experiments"
        assert w.page.locator("h1").inner_text() == "Experiments"
        SHOTS.mkdir(exist_ok=True)
        w.page.goto(f"{server.url}/dashboard/users/nobody")
        w.page.screenshot(path=str(SHOTS / "not-found.png"))
        # The browser reports the 401 and 404 answers themselves; nothing else may fail.
        expected = ("status of 401", "status of 404")
        assert [e for e in w.errors if not any(x in e for x in expected)] == []
    finally:
        w.close()
