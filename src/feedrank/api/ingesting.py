"""The write side of the service layer: events, impressions, users and items from JSON, through
the same validation as file import (feedrank.schema), PII-reduced, written by one writer.

Request-level defects (not JSON, wrong shape, too many items) reject the whole request and
store nothing. Item-level defects give per-item errors (index, field, reason); the good items are
stored unless `strict`, in which case any bad item stores nothing."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import polars as pl

from feedrank.api.settings import ApiSettings
from feedrank.exceptions import FeedrankError, RowError
from feedrank.schema import EVENT_CORE, validate_events, validate_items, validate_users
from feedrank.settings import TYPE_ALIASES, Settings
from feedrank.store import Store

SCALARS = (str, int, float)
IMPRESSION_ITEM_KEYS = {"item_id", "position", "propensity"}


class BadRequest(FeedrankError):
    """The request as a whole is unusable; nothing was stored."""


@dataclass
class ItemError:
    index: int
    field: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "reason": self.reason}


@dataclass
class IngestResult:
    received: int
    stored: int = 0
    duplicates: int = 0
    errors: list[ItemError] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # types the settings do not name

    @property
    def rejected(self) -> int:
        return len(self.errors)

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "errors": [e.as_dict() for e in self.errors],
            "notes": self.notes,
        }


MAX_DEPTH = 32  # nesting of arrays and objects in a body (json.loads recurses)


def _not_json(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(body: bytes) -> Any:
    """The body as JSON, or BadRequest: strict JSON (no NaN or Infinity), nested at most
    MAX_DEPTH levels, text that is valid Unicode (no lone surrogate such as "\\ud800")."""
    if not body.strip():
        raise BadRequest("the request body must be JSON; got an empty body")
    try:
        # Decoded strictly first: json.loads(bytes) lets UTF-8-encoded surrogates through.
        value = json.loads(body.decode("utf-8"), parse_constant=_not_json)
    except RecursionError as exc:
        raise BadRequest(f"the request body must nest at most {MAX_DEPTH} levels") from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, NaN, a 5,000-digit int
        raise BadRequest(f"the request body must be valid JSON; got a parse error: {exc}") from exc
    _check_tree(value, surrogates=b"\\ud" in body.lower())
    return value


def _check_tree(value: Any, surrogates: bool) -> None:
    """Depth, and (when the body escapes a surrogate at all) that every text encodes: a lone
    surrogate passes json.loads but no UTF-8 encoder downstream. Iterative: no recursion."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict | list):
            if depth > MAX_DEPTH:
                raise BadRequest(f"the request body must nest at most {MAX_DEPTH} levels")
            children = list(v.values()) if isinstance(v, dict) else v
            if surrogates and isinstance(v, dict):
                children += list(v)
            stack.extend((c, depth + 1) for c in children)
        elif surrogates and isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise BadRequest(
                    f"the request body's text must be valid Unicode; got {v[exc.start : exc.end]!a}"
                ) from exc


def _kind(v: Any) -> str:
    return {dict: "object", list: "array", bool: "boolean"}.get(type(v), type(v).__name__)


def event_items(payload: Any, max_batch: int) -> list[Any]:
    """One event object, an array of them, or {"events": [...]}."""
    if isinstance(payload, dict) and isinstance(payload.get("events"), list):
        items: list[Any] = payload["events"]
    elif isinstance(payload, dict):
        items = [payload]
    elif isinstance(payload, list):
        items = payload
    else:
        raise BadRequest(
            'the body must be an event object, an array of events or {"events": [...]}; '
            f"got {_kind(payload)}"
        )
    if not items:
        raise BadRequest("the batch must hold at least one event; got an empty array")
    if len(items) > max_batch:
        raise BadRequest(f"a batch must hold at most {max_batch} events; got {len(items)}")
    return items


class Ingesting:
    def __init__(self, store: Store, settings: ApiSettings, data: Settings) -> None:
        self.store, self.settings, self.data = store, settings, data

    # -- events ------------------------------------------------------------------------------------
    def _normalise(
        self, items: list[Any]
    ) -> tuple[list[dict[str, Any]], list[ItemError], list[int]]:
        """JSON objects -> flat rows of strings (the schema validator parses them), with type
        errors that JSON allows but the schema does not. A loop over the request's objects, not
        over stored events: json.loads already made each of them a Python dict."""
        rows, errors, index = [], [], []
        now = datetime.now(UTC).isoformat()
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                errors.append(
                    ItemError(i, "event", f"an event must be an object; got {_kind(item)}")
                )
                continue
            bad = next(
                (
                    k
                    for k in EVENT_CORE
                    if item.get(k) is not None
                    and (not isinstance(item[k], SCALARS) or isinstance(item[k], bool))
                ),
                None,
            )
            if bad is not None:
                errors.append(
                    ItemError(i, bad, f"{bad} must be a string or a number; got {_kind(item[bad])}")
                )
                continue
            ctx = item.get("context")
            if ctx is not None and not isinstance(ctx, dict):
                errors.append(
                    ItemError(i, "context", f"context must be an object; got {_kind(ctx)}")
                )
                continue
            extra = {k: v for k, v in item.items() if k not in EVENT_CORE and k != "context"}
            context = {**extra, **(ctx or {})}  # PII reduced by the validator
            row = {k: (None if item.get(k) is None else str(item[k])) for k in EVENT_CORE}
            row["timestamp"] = row["timestamp"] or now  # a live event without a time is now
            row["context"] = json.dumps(context) if context else None
            rows.append(row)
            index.append(i)
        return rows, errors, index

    def events(self, items: list[Any], strict: bool = False) -> tuple[IngestResult, pl.DataFrame]:
        """Validated good events (not yet written) and the per-item report."""
        result = IngestResult(len(items))
        rows, errors, index = self._normalise(items)
        good = pl.DataFrame(schema={c: pl.String for c in (*EVENT_CORE, "context")})
        if rows:
            frame = pl.DataFrame(rows, schema={c: pl.String for c in (*EVENT_CORE, "context")})
            v = validate_events(frame, self.data, None, 0, len(rows), self.settings.pii)
            errors += [ItemError(index[e.line or 0], e.field, e.message) for e in v.errors]
            good = v.good
        result.errors = sorted(errors, key=lambda e: e.index)
        if strict and result.errors:
            return result, good.clear()
        result.notes = self._type_notes(good)
        return result, good

    def _type_notes(self, good: pl.DataFrame) -> list[str]:
        """Types are open (any string), as at file import: a type the settings do not name is
        stored with unknown_type_weight, and the answer says so (a misspelt type is found at
        once, not when a model has learnt nothing from it)."""
        s = self.data
        notes = []
        for t in sorted(set(good["type"].unique().to_list()) - set(s.type_weights)):
            near = (
                [TYPE_ALIASES[t]] if t in TYPE_ALIASES else difflib.get_close_matches(t, s.types, 1)
            )
            hint = f"; did you mean '{near[0]}'?" if near else ""
            notes.append(
                f"type '{t}' is not in the settings' type_weights: stored with weight "
                f"{s.unknown_type_weight:g} (unknown_type_weight){hint}"
            )
        return notes

    def write_events(self, result: IngestResult, good: pl.DataFrame) -> IngestResult:
        if good.is_empty():
            return result
        result.stored = self.store.add_events(good)
        result.duplicates = good.height - result.stored
        return result

    def impressions(self, payload: Any) -> list[dict[str, Any]]:
        """{user_id, items: [id | {item_id, position?, propensity?}], timestamp?, device?,
        request_id?, context?} -> impression events at positions 1.. (or the given ones).

        `propensity` is the logging policy's probability of having shown that item at that
        position (the off-policy estimators' denominator). It belongs to each item, so it is
        given only inside an item object; it is stored in the event's context as a number and
        checked like any imported one (0 < p <= 1, else a per-item error on field
        `propensity`). A request-level `propensity`, `propensities` or context `propensity` is
        refused: one value for a whole slate would silently stand for every item."""
        if not isinstance(payload, dict):
            raise BadRequest(f"an impression must be an object; got {_kind(payload)}")
        ctx = payload.get("context")
        misplaced = [k for k in ("propensity", "propensities") if k in payload]
        misplaced += ["context.propensity"] if isinstance(ctx, dict) and "propensity" in ctx else []
        if misplaced:
            raise BadRequest(
                "a propensity must be given per item, as items: [{item_id, position, "
                f"propensity}}, ...]; got {misplaced[0]!r} at the request level"
            )
        shown = payload.get("items")
        if not isinstance(shown, list) or not shown:
            raise BadRequest(
                "impression 'items' must be a non-empty array of item ids or "
                f"{{item_id, position}} objects; got {_kind(shown)}"
            )
        if len(shown) > self.settings.max_batch:
            raise BadRequest(
                f"'items' must hold at most {self.settings.max_batch}; got {len(shown)}"
            )
        request_id = payload.get("request_id")
        if request_id is not None and not (isinstance(request_id, str) and request_id):
            raise BadRequest(
                "request_id must be a non-empty string (the idempotence key); got "
                f"{json.dumps(request_id)[:60]}"
            )
        for n, it in enumerate(shown):
            extra = sorted(set(it) - IMPRESSION_ITEM_KEYS) if isinstance(it, dict) else []
            if extra:  # an item cannot make itself a click, or another user's
                raise BadRequest(
                    f"items[{n}] may hold only {sorted(IMPRESSION_ITEM_KEYS)}; got {extra}"
                )
        base = {k: payload.get(k) for k in ("user_id", "timestamp", "device", "context")}
        out: list[dict[str, Any]] = []
        for n, it in enumerate(shown, start=1):
            one = it if isinstance(it, dict) else {"item_id": it, "position": n}
            event = {**base, **one, "type": "impression"}
            event.setdefault("position", n)
            if request_id is not None:
                event["event_id"] = f"{request_id}:{event.get('position')}:{event.get('item_id')}"
            out.append(event)
        return out

    # -- users and items ---------------------------------------------------------------------------
    def _one(self, id_col: str, id_value: str, attributes: Any) -> pl.DataFrame:
        if not isinstance(attributes, dict):
            raise BadRequest(f"the body must be an object of attributes; got {_kind(attributes)}")
        bad = next((k for k, v in attributes.items() if isinstance(v, dict | list)), None)
        if bad is not None:
            raise BadRequest(
                f"attribute '{bad}' must be a string, number, boolean or null; "
                f"got {_kind(attributes[bad])}"
            )
        row = {**{k: v for k, v in attributes.items() if k != id_col}, id_col: id_value}
        return pl.DataFrame([row])

    def user(self, user_id: str, attributes: Any) -> dict[str, Any]:
        frame = self._one("user_id", user_id, attributes)
        v = validate_users(frame, None, 0, 1, self.settings.pii, self.data.age_bands)
        _raise_first(v.errors)
        self.store.upsert_users(v.good)
        return _jsonable_row(v.good.to_dicts()[0])

    def item(self, item_id: str, attributes: Any) -> dict[str, Any]:
        frame = self._one("item_id", item_id, attributes)
        if "created_at" not in frame.columns or frame["created_at"][0] is None:
            frame = frame.with_columns(created_at=pl.lit(datetime.now(UTC).isoformat()))
        v = validate_items(
            frame.with_columns(pl.col("created_at").cast(pl.String)), None, 0, 1, self.data
        )
        _raise_first(v.errors)
        self.store.upsert_items(v.good)
        return _jsonable_row(v.good.to_dicts()[0])


def _raise_first(errors: list[RowError]) -> None:
    if errors:
        e = errors[0]
        raise FieldError(e.field, e.message)


class FieldError(FeedrankError):
    def __init__(self, field: str, reason: str) -> None:
        self.field, self.reason = field, reason
        super().__init__(reason)


def _jsonable_row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}
