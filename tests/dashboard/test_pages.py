"""The dashboard over HTTP, on a real server: who may see it and how a browser passes the key
(header, login form, ?key=), that no key reaches the logs, that every page renders with content
and no external URL, that unknown users and models are 404 pages without a traceback, and that
the inspector shows the API's own recommendations."""

from __future__ import annotations

import re

import pytest

from .conftest import ADMIN_KEY, PAGES, READ_KEY, Server

COOKIE = "feedrank_dashboard"


def _items(html: str) -> list[str]:
    found = re.search(r"id='recommendations' data-items='([^']*)'", html)
    assert found, "the inspector's recommendations block is missing"
    return found.group(1).split()


@pytest.mark.parametrize("name", list(PAGES))
def test_every_page_renders_with_a_title_nav_charts_and_no_external_url(
    server: Server, name: str
) -> None:
    with server.client(headers=server.admin) as c:
        r = c.get(PAGES[name])
    assert r.status_code == 200, r.text[:500]
    html = r.text
    assert re.search(r"<title>[^<]+</title>", html)
    assert "href='/dashboard/models'" in html  # the navigation
    assert "Traceback" not in html
    assert not re.search(r"failed: |this page failed", html)  # an analysis that raised
    # Any URL in the page is this server's: the only absolute one allowed is SVG's namespace.
    urls = set(re.findall(r"(?:src|href|action)=['\"]([^'\"]+)", html))
    assert all(u.startswith(("/dashboard", "data:")) for u in urls), urls
    external = set(re.findall(r"https?://[^\s'\"<>]+", html)) - {"http://www.w3.org/2000/svg"}
    assert not external
    for chart in re.findall(r"<figure class=\"chart\".*?</figure>", html, re.S):
        assert 'class="mark"' in chart, chart[:300]


def test_pages_with_data_draw_their_charts(server: Server) -> None:
    wanted = {
        "overview": ["events-per-day", "active-per-day"],
        "model-glm": ["segment-tenure", "segment-gender", "calibration", "coefficients"],
        "models": ["registry-ndcg"],
        "experiments": ["ab-home-ctr", "ab-home-p", "offpolicy"],
        "insights": ["lang-by-age", "lang-by-gender", "login-hour"],
        "user": ["user-timeline"],
    }
    with server.client(headers=server.admin) as c:
        for page, charts in wanted.items():
            html = c.get(PAGES[page]).text
            for chart in charts:
                assert f'data-chart="{chart}"' in html, f"{page} lacks the {chart} chart"


def test_without_a_key_the_login_page_answers_401(server: Server) -> None:
    with server.client() as c:
        for path in PAGES.values():
            r = c.get(path)
            assert r.status_code == 401
            assert "name='key'" in r.text and "<title>Sign in" in r.text
            assert "u00001" not in r.text or path.endswith("u00001")  # no data leaks
        wrong = c.get("/dashboard", headers={"X-API-Key": "not-a-key"})
        assert wrong.status_code == 401
        read_only = c.get("/dashboard", headers={"X-API-Key": READ_KEY})
        assert read_only.status_code == 403 and "admin scope" in read_only.text


def test_key_in_the_url_becomes_a_cookie_and_leaves_the_url_and_the_logs(server: Server) -> None:
    before = len(server.log.lines)
    with server.client() as c:
        r = c.get("/dashboard/models", params={"key": ADMIN_KEY, "x": "1"})
        assert r.status_code == 303
        assert r.headers["location"] == "/dashboard/models?x=1"
        cookie = r.headers["set-cookie"]
        assert cookie.startswith(COOKIE + "=") and ADMIN_KEY not in cookie
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/dashboard" in cookie
        page = c.get(r.headers["location"])
        assert page.status_code == 200 and "Registry" in page.text
        bad = c.get("/dashboard", params={"key": "wrong"})
        assert bad.status_code == 401
    logged = "\n".join(server.log.lines[before:])
    assert "/dashboard/models" in logged  # the access log saw the request...
    assert ADMIN_KEY not in logged and "wrong" not in logged  # ...but not the key
    assert "key=[redacted]" in logged


def test_login_form_sets_a_session_cookie_and_sign_out_ends_it(server: Server) -> None:
    with server.client() as c:
        bad = c.post("/dashboard/login", data={"key": "nope", "next": "/dashboard/insights"})
        assert bad.status_code == 401 and "not a valid API key" in bad.text
        r = c.post("/dashboard/login", data={"key": ADMIN_KEY, "next": "/dashboard/insights"})
        assert r.status_code == 303 and r.headers["location"] == "/dashboard/insights"
        assert c.get("/dashboard/insights").status_code == 200
        out = c.post("/dashboard/logout")
        assert out.status_code == 303
        assert c.get("/dashboard/insights").status_code == 401
        elsewhere = c.post(
            "/dashboard/login", data={"key": ADMIN_KEY, "next": "https://evil.example/"}
        )
        assert elsewhere.headers["location"] == "/dashboard"  # never an open redirect


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("/dashboard/users/no-such-user", 404, "user must be a stored user"),
        ("/dashboard/models/no-such-model", 404, "model must be one of ['glm', 'popularity']"),
        ("/dashboard/users/u00001?model=no-such-model", 404, "model must be one of"),
        ("/dashboard/users/u00001?k=0", 422, "k must be an integer from 1 to 100; got '0'"),
        ("/dashboard/users/u00001?k=many", 422, "got 'many'"),
        ("/dashboard/users/u00001?filter=nonsense", 422, "filter"),
        ("/dashboard/nowhere", 404, "the dashboard's pages are"),
    ],
)
def test_bad_input_is_a_page_that_says_so(
    server: Server, path: str, status: int, says: str
) -> None:
    with server.client(headers=server.admin) as c:
        r = c.get(path)
    assert r.status_code == status, r.text[:300]
    assert "text/html" in r.headers["content-type"]
    text = r.text.replace("&#x27;", "'")
    assert says in text
    assert "Traceback" not in text and str(server.root) not in text


@pytest.mark.parametrize(
    "query", [{}, {"k": "5"}, {"k": "7", "model": "popularity"}, {"k": "4", "model": "glm"}]
)
def test_inspector_shows_the_apis_recommendations(server: Server, query: dict[str, str]) -> None:
    with server.client(headers=server.admin) as c:
        for user in ("u00001", "u00042", "u01999"):
            page = c.get(f"/dashboard/users/{user}", params=query)
            assert page.status_code == 200, page.text[:300]
            api = c.get(f"/users/{user}/recommendations", params=query)
            assert api.status_code == 200, api.text
            want = [i["item_id"] for i in api.json()["items"]]
            assert _items(page.text) == want
            assert len(want) == int(query.get("k", 10))


def test_user_search_finds_users_and_links_them(server: Server) -> None:
    with server.client(headers=server.admin) as c:
        r = c.get("/dashboard/users", params={"q": "u0199"})
    assert r.status_code == 200
    assert "/dashboard/users/u01999" in r.text and "/dashboard/users/u00001" not in r.text
    assert "10 of 2,000 users match" in r.text


def test_a_user_with_a_profile_and_no_events_gets_fallbacks_and_says_so(server: Server) -> None:
    from feedrank.store import open_store

    from .sitebuild import store_url

    with open_store(store_url(server.root)) as store:
        quiet = sorted(set(store.users()["user_id"]) - set(store.user_counts()["user_id"].unique()))
    assert quiet, "the demo site has users who never came back"
    with server.client(headers=server.admin) as c:
        page = c.get(f"/dashboard/users/{quiet[0]}")
        api = c.get(f"/users/{quiet[0]}/recommendations").json()
    assert page.status_code == 200
    assert _items(page.text) == [i["item_id"] for i in api["items"]]
    assert "cold start: fallbacks only" in page.text
    assert "No event stored for this user" in page.text


def test_training_stores_what_the_models_page_shows(server: Server) -> None:
    from feedrank.pipeline.registry import Registry

    from .sitebuild import MODELS

    rec = Registry(server.root / MODELS).resolve("glm")
    diagnostics = rec.meta["diagnostics"]
    segments = {r["segment"] for r in diagnostics["segments"]}
    assert segments == {"tenure", "age_band", "gender", "country"}
    assert {r["model"] for r in diagnostics["segments"]} == {"glm", "popularity"}
    curves = diagnostics["calibration"]
    assert set(curves) == {"glm", "popularity"}
    total = sum(c["count"] for c in curves["glm"])
    assert total == rec.meta["split"]["test_examples"]  # every held-out impression, binned
