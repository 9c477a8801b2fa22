"""A real server process: acknowledged events survive kill -9; bad input is a clear 4xx with
nothing partial stored; the OpenAPI schema fuzzed gives no 5xx."""

from __future__ import annotations

import json
from collections.abc import Callable

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode

from feedrank.store import open_store

from .server import KEY, Server


def _batch(prefix: str, n: int) -> list[dict[str, object]]:
    return [
        {"event_id": f"{prefix}{i}", "user_id": f"{prefix}-user{i % 7}", "item_id": f"p{i % 40 + 1:05d}",
         "type": "click" if i % 3 else "like", "timestamp": 1767800000 + i}
        for i in range(n)
    ]  # fmt: skip


def test_acknowledged_events_survive_kill_9(make_server: Callable[..., Server]) -> None:
    server = make_server()
    acked: list[str] = []
    with server.client() as c:
        for n in range(8):  # acknowledged writes, the last just before the kill
            batch = _batch(f"k{n}-", 25)
            r = c.post("/events", json=batch)
            assert r.status_code == 200, r.text
            acked += [str(e["event_id"]) for e in batch]
    server.kill9()
    stored = open_store(server.store_url).events()
    assert set(acked) <= set(stored["event_id"].drop_nulls().to_list())
    # Restarted, the server reads them back: the same events are now duplicates.
    again = make_server()
    with again.client() as c:
        r = c.post("/events", json=_batch("k7-", 25)).json()
        assert (r["stored"], r["duplicates"]) == (0, 25)
        assert c.get("/health").json()["status"] == "ok"
    assert KEY not in server.log() + again.log()  # keys never logged


def test_bad_input_then_fuzzing_give_clear_4xx_and_no_5xx(shared: Server) -> None:
    """One server for both (a start costs seconds): hand-made bad inputs, then the fuzzer."""
    _bad_input_is_a_clear_4xx_and_stores_nothing(shared)
    _fuzzed_openapi_gives_no_5xx(shared)


def _bad_input_is_a_clear_4xx_and_stores_nothing(server: Server) -> None:
    store = open_store(server.store_url)
    before = store.stats()["events"]
    json_type = {"content-type": "application/json"}
    with server.client() as c:
        r = c.post("/events", content=b'{"user_id": "x", "type": ', headers=json_type)
        assert r.status_code == 400 and "valid JSON" in r.json()["detail"]
        r = c.post("/events", json={"user_id": ["a"], "item_id": "p00001", "type": "click"})
        assert r.status_code == 422
        assert r.json()["errors"][0] == {
            "index": 0, "field": "user_id", "reason": "user_id must be a string or a number; got array"
        }  # fmt: skip
        r = c.post("/events", json={"user_id": "x", "item_id": "p00001", "type": "click",
                                    "timestamp": "teatime"})  # fmt: skip
        assert r.status_code == 422 and "teatime" in r.json()["errors"][0]["reason"]
        r = c.post("/events", params={"strict": True},
                   json=[*_batch("bad-", 5), {"user_id": "x", "type": "teleport"}])  # fmt: skip
        assert r.status_code == 422 and r.json()["stored"] == 0
        huge = json.dumps(_batch("huge-", 2000)).encode()
        r = c.post("/events", content=huge, headers=json_type)
        assert r.status_code == 413 and "at most 65536 bytes" in r.json()["detail"]
        r = c.put("/users/x", json=["not", "an", "object"])
        assert r.status_code == 400 and "object" in r.json()["detail"]
        r = c.get("/users/x/recommendations", params={"k": "many"})
        assert r.status_code == 422
    assert store.stats()["events"] == before


def _fuzzed_openapi_gives_no_5xx(server: Server) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    headers = {"X-API-Key": KEY}
    operations = [result.ok() for result in schema.get_all_operations()]
    checked = {mode: 0 for mode in GenerationMode}
    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(max_examples=8, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))  # fmt: skip
            @given(case=op.as_strategy(generation_mode=mode))
            def run(case: schemathesis.Case) -> None:
                response = case.call(base_url=server.url, headers=headers, timeout=30)
                assert response.status_code < 500, (
                    f"{case.method} {case.formatted_path} {case.query} {case.body!r}: "
                    f"{response.status_code} {response.text[:500]}\n{server.log()}"
                )

            try:
                run()
            except Unsatisfiable:  # nothing to make invalid (an operation without inputs)
                assert mode is GenerationMode.NEGATIVE
                continue
            checked[mode] += 1
    # every operation positively, and negatively all that take an input (a key counts): all
    # but GET /health
    assert len(operations) == 14
    assert checked[GenerationMode.POSITIVE] == len(operations)
    assert checked[GenerationMode.NEGATIVE] == len(operations) - 1


def test_the_serve_command_starts_a_server(make_server: Callable[..., Server]) -> None:
    server = make_server(cli=True)
    with server.client() as c:
        assert c.get("/health").json()["status"] == "ok"
        assert c.get("/users/u00001/recommendations").status_code == 200
