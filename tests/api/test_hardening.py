"""Issue 12: no input gets a 5xx (a seeded corpus of bad requests, the attack's triggers and
their variants), a 4xx stores nothing, every 5xx is counted and carries a request id, expensive
requests have their own limit, impressions carry only what was shown, no path in an answer."""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from feedrank.api import create_app
from feedrank.store import Store

from .conftest import ADMIN, READ, settings_for

KEYS = {"X-API-Key": "a-key"}  # admin: every route
DEEP = b"[" * 990 + b"]" * 990
GOOD = {"user_id": "fuzz-u", "item_id": "p00001", "type": "click", "timestamp": 1767800000}
BAD_VALUES: list[Any] = [
    None, "", " ", [], {}, [1, 2], {"a": {"b": 1}}, True, False, 0, -1, 1e308, -1e308, 10**30,
    -99999999999, 99999999999, "0000-01-01T00:00:00", "9999-12-31T23:59:59Z", "1969-12-31",
    "abc", "\ud800", "x" * 300, {"__line": 1}, {"__err_field": "x"}, "NaN", "inf",
]  # fmt: skip
FIELDS = ["user_id", "item_id", "type", "timestamp", "value", "position", "device", "event_id",
          "context", "propensity", "__line", "__err_field", "__err_msg", "age_parsed"]  # fmt: skip
RAW = [
    DEEP, b'{"a":' * 100 + b"1" + b"}" * 100, b'{"user_id": "\\ud800", "type": "click"}',
    b'{"user_id": "u", "type": "click", "item_id": "p1", "value": NaN}',
    b'{"user_id": "u", "type": "click", "item_id": "p1", "value": Infinity}',
    b'{"user_id": "u", "type": "click", "item_id": "p1", "value": -Infinity}',
    b'{"user_id": "\xed\xa0\x80", "type": "click"}', b"\xff\xfe", b"", b"null", b"1", b'"s"',
    b"[]", b"{}", b'{"events": []}', b'{"events": {}}', b'{"user_id": 1' + b"0" * 5000 + b"}",
    b'{"user_id": "u", "type": "click", "item_id": "p1", "context": {"__line": 2}}',
]  # fmt: skip


def _corpus(rng: random.Random) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(method, path, request kwargs): at least 400 requests outside the schema."""
    json_type = {"content-type": "application/json"}
    for field in FIELDS:
        for value in BAD_VALUES:
            yield "POST", "/events", {"json_body": {**GOOD, field: value}}
    for body in RAW:
        for path in ("/events", "/impressions", "/users/fz", "/items/fz", "/settings"):
            method = "POST" if path in ("/events", "/impressions") else "PUT"
            yield method, path, {"content": body, "headers": json_type}
    for value in BAD_VALUES:
        shown = {"item_id": "p00001", "position": 1}
        yield (
            "POST",
            "/impressions",
            {"json_body": {"user_id": "fz", "items": [shown], "request_id": value}},
        )
        for key in ("type", "user_id", "propensity", "value", "timestamp", "__line"):
            yield (
                "POST",
                "/impressions",
                {"json_body": {"user_id": "fz", "items": [{**shown, key: value}]}},
            )
        yield "PUT", "/users/fz", {"json_body": {"age": value, "age_parsed": value, "Age": value}}
        yield "PUT", "/items/fz", {"json_body": {"created_at": value, "__created": value}}
    for _ in range(60):  # random mixtures of bad values in one batch
        batch = [{**GOOD, **{f: rng.choice(BAD_VALUES) for f in rng.sample(FIELDS, 3)}}
                 for _ in range(rng.randint(1, 5))]  # fmt: skip
        yield "POST", "/events", {"json_body": batch}
    for params in ({"k": 0}, {"k": "many"}, {"k": 10**9}, {"explore": 2}, {"explain": "maybe"},
                   {"model": "../../../etc/passwd"}, {"model": "nope"}, {"experiment": "x" * 300},
                   {"experiment": "nope"}, {"exclude_seen": "perhaps"}):  # fmt: skip
        yield "GET", "/users/u0001/recommendations", {"params": params}
        yield "GET", "/items/p00001/similar", {"params": params}
    for uid in ("x" * 257, "%ED%A0%80", "%00", "..%2F..%2Fetc"):
        yield "DELETE", f"/users/{uid}", {}
        yield "GET", f"/users/{uid}/recommendations", {}


def _send(client: TestClient, method: str, path: str, kw: dict[str, Any]) -> Any:
    if "json_body" in kw:  # serialised by hand: lone surrogates and NaN as they are
        body = json.dumps(kw.pop("json_body")).encode("utf-8", "surrogatepass")
        kw = {**kw, "content": body, "headers": {"content-type": "application/json"}}
    headers = {**KEYS, **kw.pop("headers", {})}
    return client.request(method, path, headers=headers, **kw)


@pytest.fixture
def raw_client(site: Any) -> Iterator[TestClient]:
    """Server exceptions answered as the server answers them (500), not raised in the test."""
    app = create_app(settings_for(site))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_bad_request_corpus_gets_no_5xx_and_a_4xx_stores_nothing(
    raw_client: TestClient, store: Store
) -> None:
    corpus = list(_corpus(random.Random(12)))
    assert len(corpus) >= 400
    failures, codes = [], []
    for method, path, kw in corpus:
        before = store.watermark()
        r = _send(raw_client, method, path, dict(kw))
        codes.append(r.status_code)
        if r.status_code >= 500:
            failures.append(f"{method} {path} {kw}: {r.status_code} {r.text[:200]}")
        elif r.status_code in (400, 413, 422) and path in ("/events", "/impressions"):
            assert store.watermark() == before, f"{method} {path} {kw}: a 4xx stored something"
        assert "/tmp" not in r.text and str(store.url) not in r.text  # no path in an answer
    assert failures == []
    assert sum(400 <= c < 500 for c in codes) >= 300  # the corpus is mostly refused, not stored
    metrics = raw_client.get("/metrics", headers=READ).text
    assert not [m for m in metrics.splitlines() if 'status="5' in m and not m.startswith("#")]


def test_listed_triggers_are_each_a_clear_4xx(raw_client: TestClient) -> None:
    cases = {
        b'{"user_id": "u", "item_id": "p00001", "type": "click", "__line": 1}': "__line",
        b'{"user_id": "u", "item_id": "p00001", "type": "click", "context": {"__err_field": 1}}': "__err_field",
        b'{"user_id": "\\ud800", "item_id": "p00001", "type": "click"}': "Unicode",
        DEEP: "nest at most",
    }  # fmt: skip
    for body, said in cases.items():
        r = raw_client.post(
            "/events", content=body, headers={**KEYS, "content-type": "application/json"}
        )
        assert r.status_code in (400, 422) and said in r.text, r.text
    r = raw_client.put("/users/u1", json={"age_parsed": "abc"}, headers=KEYS)
    assert r.status_code == 200  # an attribute like any other (it was the validator's name)
    r = raw_client.put("/users/u1", json={"Age": "abc"}, headers=KEYS)
    assert r.status_code == 422 and r.json()["field"] == "age"


@pytest.mark.parametrize("when", ["0000-01-01T00:00:00", -99999999999, "2100-01-01", "1969-12-31"])
def test_times_out_of_range_are_refused_at_every_door(
    raw_client: TestClient, store: Store, when: object
) -> None:
    r = raw_client.post("/events", json={**GOOD, "timestamp": when}, headers=KEYS)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "timestamp"
    assert "1970-01-01 to 2100-01-01" in r.json()["errors"][0]["reason"]
    r = raw_client.put("/items/old-item", json={"created_at": when}, headers=KEYS)
    assert r.status_code == 422 and r.json()["field"] == "created_at"
    assert store.items(["old-item"]).is_empty()  # 422 and nothing stored (it was 500 and stored)


def test_propensities_must_be_finite(raw_client: TestClient, store: Store) -> None:
    for p in (b"NaN", b"Infinity", b"-Infinity", b"0", b"1.5", b'"abc"'):
        body = b'{"user_id": "pp", "items": [{"item_id": "p00001", "propensity": ' + p + b"}]}"
        r = raw_client.post(
            "/impressions", content=body, headers={**KEYS, "content-type": "application/json"}
        )
        assert r.status_code in (400, 422), (p, r.text)
    assert store.events(user_ids=["pp"]).is_empty()


def test_impression_items_carry_only_what_was_shown(raw_client: TestClient, store: Store) -> None:
    shown = {"item_id": "p00001", "position": 1}
    for extra in ({"type": "click"}, {"user_id": "someone-else"}, {"event_id": "e"}):
        r = raw_client.post(
            "/impressions", json={"user_id": "imp", "items": [{**shown, **extra}]}, headers=KEYS
        )
        assert r.status_code == 400 and next(iter(extra)) in r.json()["detail"]
    for request_id in ({"a": 1}, [1], 7, ""):
        r = raw_client.post(
            "/impressions",
            json={"user_id": "imp", "items": [shown], "request_id": request_id},
            headers=KEYS,
        )
        assert (
            r.status_code == 400 and "request_id must be a non-empty string" in r.json()["detail"]
        )
    assert store.events(user_ids=["imp", "someone-else"]).is_empty()
    body = {"user_id": "imp", "items": [shown], "request_id": "r1"}
    assert raw_client.post("/impressions", json=body, headers=KEYS).json()["stored"] == 1
    assert raw_client.post("/impressions", json=body, headers=KEYS).json()["duplicates"] == 1


def test_a_5xx_is_counted_by_route_and_status_and_names_a_request_id(
    raw_client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    rt = raw_client.app.state.runtime  # type: ignore[attr-defined]

    def broken(user_id: str) -> None:  # a defect of ours, not of the input
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(rt.store, "seen_items", broken)
    r = raw_client.get("/users/u0001/recommendations", headers={**READ, "X-Request-ID": "req-42"})
    assert r.status_code == 500 and r.json()["request_id"] == "req-42"
    assert r.headers["x-request-id"] == "req-42" and "a bug" not in r.text
    assert any("req-42" in rec.getMessage() for rec in caplog.records)
    metrics = raw_client.get("/metrics", headers=READ).text
    assert (
        'feedrank_http_requests_total{method="GET",route="/users/{user_id}/recommendations",'
        'status="500"} 1.0' in metrics
    )


def test_explanations_have_their_own_limit(make_client: Any) -> None:
    with make_client(max_expensive=1) as client:
        rt = client.app.state.runtime
        rt.expensive_running = 1  # one explanation in flight
        r = client.get("/users/u0001/recommendations", params={"explain": True}, headers=READ)
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        assert client.get("/items/p00001/similar", headers=READ).status_code == 429
        plain = client.get("/users/u0001/recommendations", headers=READ)
        assert plain.status_code == 200  # plain recommendations are never limited
        rt.expensive_running = 0
        r = client.get("/users/u0001/recommendations", params={"explain": True}, headers=READ)
        assert r.status_code == 200 and rt.expensive_running == 0  # the slot is given back


def test_no_path_in_an_unknown_model_answer(client: TestClient, site: Any) -> None:
    r = client.get("/users/u0001/recommendations", params={"model": "nope"}, headers=ADMIN)
    assert r.status_code == 422 and str(site) not in r.text, r.text


def test_pii_keys_any_case_and_contact_values_are_dropped(
    raw_client: TestClient, store: Store
) -> None:
    body = {"Age": 33, "EMAIL": "a@b.example", "note": "bob@example.com",
            "contact": "+1 555 123 4567", "Latitude": 52.1, "country": "NL", "born": "1990-05-01"}  # fmt: skip
    r = raw_client.put("/users/pii-u", json=body, headers=KEYS)
    assert r.status_code == 200, r.text
    (user,) = store.users(["pii-u"]).to_dicts()
    kept = {k: v for k, v in user.items() if v is not None}
    assert kept == {"user_id": "pii-u", "age_band": "25-34", "country": "NL", "born": "1990-05-01"}
    event = {**GOOD, "user_id": "pii-u", "context": {"Email": "x@y.example", "ref": "(555) 123-4567",
             "LNG": 4.9, "page": "home", "order": "123456789"}}  # fmt: skip
    assert raw_client.post("/events", json=event, headers=KEYS).json()["stored"] == 1
    (stored,) = store.events(user_ids=["pii-u"]).to_dicts()
    context = {k: v for k, v in json.loads(str(stored["context"])).items() if v is not None}
    assert context == {"page": "home", "order": "123456789"}


def test_a_store_holding_times_out_of_range_still_loads_and_says_so(site: Any) -> None:
    """Rows an older version let in (year 0, epoch -99999999999) once killed the reload loop,
    start-up, score and stats; they load now, read back at the range's edge, and are counted."""
    import sqlite3

    from typer.testing import CliRunner

    from feedrank.cli.main import app as cli

    from .sitebuild import DB, MODELS, store_url

    with contextlib.closing(sqlite3.connect(site / DB)) as c:
        for user, seconds in (("old0", -62167219200), ("old1", -99999999999)):
            c.execute(
                "INSERT INTO events (user_id, item_id, type, ts, value) "
                "VALUES (?, 'p00001', 'click', ?, 1.0)",
                (user, seconds * 10**6),
            )
            c.execute("INSERT INTO user_counts VALUES (?, 'click', 1.0, 1, ?, ?)",
                      (user, seconds * 10**6, seconds * 10**6))  # fmt: skip
        c.commit()
    with TestClient(create_app(settings_for(site))) as client:
        for user in ("old0", "old1", "u0001"):
            r = client.get(f"/users/{user}/recommendations", headers=READ)
            assert r.status_code == 200, r.text
        assert client.get("/health").json()["status"] == "ok"
    args = ["--store", store_url(site), "--models-dir", str(site / MODELS)]
    out = CliRunner().invoke(cli, [*args, "stats", "--json"])
    assert out.exit_code == 0 and json.loads(out.stdout)["events_out_of_time_range"] == 2
    assert CliRunner().invoke(cli, [*args, "score", "--k", "5"]).exit_code == 0
