"""Index layout of the Elasticsearch/OpenSearch store: names, mappings, the events' index
template, monthly index names, retention and the atomic alias swap. Pure functions only: they
build request bodies and never talk to a server, so they are unit-tested everywhere.

    {prefix}user_interactions-YYYY.MM   one index per month of events (routing = user_id), all
                                        behind the alias {prefix}user_interactions
    {prefix}post_metadata               one document per item: ids, attributes, levels (lv.*),
                                        numeric features (f.*), created_at, embedding
    {prefix}users                       one document per user profile
    {prefix}recs-g{N}                   one index per recommendation generation, one document per
                                        user (ranked arrays); {prefix}recs points at the active one
    {prefix}meta                        one document per generation (model, counts, created_at)
    {prefix}feed                        one document: the change feed's sequence (next number,
                                        blocks reserved and not yet published, erasures)
    {prefix}settings                    one document per settings version (the JSON text)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import polars as pl

Flavor = Literal["elasticsearch", "opensearch"]
FLAVORS: tuple[Flavor, ...] = ("elasticsearch", "opensearch")
_PREFIX = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,60}$")
MONTH_FORMAT = "%Y.%m"
EMBEDDING = "embedding"  # an item column holding a list of floats becomes the dense vector


@dataclass(frozen=True)
class Names:
    """Every index, alias, template and stored-script name of one store (one prefix)."""

    prefix: str = "feedrank_"

    def __post_init__(self) -> None:
        if self.prefix and not _PREFIX.match(self.prefix):
            raise ValueError(
                "index prefix must be lowercase letters, digits, '_', '.' or '-' (at most 61, "
                f"not starting with a symbol); got '{self.prefix}'"
            )

    @property
    def events_alias(self) -> str:
        return f"{self.prefix}user_interactions"

    @property
    def events_pattern(self) -> str:
        return f"{self.prefix}user_interactions-*"

    @property
    def events_template(self) -> str:
        return f"{self.prefix}user_interactions"

    def events_index(self, month: str) -> str:
        return f"{self.prefix}user_interactions-{month}"

    @property
    def items(self) -> str:
        return f"{self.prefix}post_metadata"

    @property
    def users(self) -> str:
        return f"{self.prefix}users"

    @property
    def meta(self) -> str:
        return f"{self.prefix}meta"

    @property
    def feed(self) -> str:
        return f"{self.prefix}feed"

    @property
    def settings(self) -> str:
        return f"{self.prefix}settings"

    @property
    def recs_alias(self) -> str:
        return f"{self.prefix}recs"

    @property
    def recs_pattern(self) -> str:
        return f"{self.prefix}recs-g*"

    def recs_index(self, generation: int) -> str:
        return f"{self.prefix}recs-g{generation:06d}"

    def generation_of(self, index: str) -> int | None:
        m = re.fullmatch(re.escape(self.prefix) + r"recs-g(\d+)", index)
        return int(m.group(1)) if m else None

    def month_of(self, index: str) -> str | None:
        m = re.fullmatch(re.escape(self.prefix) + r"user_interactions-(\d{4}\.\d{2})", index)
        return m.group(1) if m else None

    @property
    def glm_script(self) -> str:
        return f"{self.prefix}glm-logit"

    @property
    def all_indices(self) -> str:
        return f"{self.prefix}*"


def month_expr(ts: pl.Expr) -> pl.Expr:
    """The monthly index suffix of each event, vectorised."""
    return ts.dt.convert_time_zone("UTC").dt.strftime(MONTH_FORMAT)


# -- mappings ----------------------------------------------------------------------------------
_KEYWORD = {"type": "keyword"}
_STORED_ONLY = {"type": "keyword", "index": False, "doc_values": False}
# Attributes are free-form: strings become keywords, every number a double (a column first
# seen as 34 and later as 0.5 must not be truncated to a long); _source keeps the exact JSON.
_ATTR_TEMPLATES = [
    {
        "attr_strings": {
            "path_match": "attrs.*",
            "match_mapping_type": "string",
            "mapping": {"type": "keyword", "ignore_above": 2048},
        }
    },
    {
        "attr_longs": {
            "path_match": "attrs.*",
            "match_mapping_type": "long",
            "mapping": {"type": "double"},
        }
    },
    {
        "attr_doubles": {  # the default for JSON floats would be a 32-bit float
            "path_match": "attrs.*",
            "match_mapping_type": "double",
            "mapping": {"type": "double"},
        }
    },
    {"levels": {"path_match": "lv.*", "mapping": {"type": "keyword", "ignore_above": 2048}}},
    {"features": {"path_match": "f.*", "mapping": {"type": "double"}}},
]


# A text attribute that looks like a date or a number stays text ('0042', '2024-03-01').
_NO_DETECTION = {"date_detection": False, "numeric_detection": False}


def events_mapping() -> dict[str, Any]:
    return {
        "dynamic": "strict",
        "properties": {
            "event_id": _KEYWORD,
            "user_id": _KEYWORD,
            "item_id": _KEYWORD,
            "type": _KEYWORD,
            "timestamp": {"type": "date", "format": "epoch_millis"},  # for people and dashboards
            "ts_us": {"type": "long"},  # exact to the microsecond: every filter and sort uses it
            "seq": {"type": "long"},  # the change feed's position; arrival order among equal times
            "value": {"type": "double"},
            "position": {"type": "integer"},
            "device": _KEYWORD,
            "context": _STORED_ONLY,
        },
    }


def items_mapping(flavor: Flavor, dims: int | None = None, knn: bool = True) -> dict[str, Any]:
    props: dict[str, Any] = {
        "item_id": _KEYWORD,
        "created_at": {"type": "date", "format": "epoch_millis"},
        "created_at_us": {"type": "long"},
        "attrs": {"type": "object", "dynamic": True},
        "lv": {"type": "object", "dynamic": True},
        "f": {"type": "object", "dynamic": True},
        "features_at_us": {"type": "long"},
        "seq": {"type": "long"},  # the change feed's position of the upsert that wrote it
    }
    if dims is not None:
        props[EMBEDDING] = vector_mapping(flavor, dims, knn)
    return {
        "dynamic": "strict",
        **_NO_DETECTION,
        "dynamic_templates": _ATTR_TEMPLATES,
        "properties": props,
    }


def vector_mapping(flavor: Flavor, dims: int, knn: bool = True) -> dict[str, Any]:
    """The item-embedding field: ES dense_vector (HNSW, cosine) or OpenSearch knn_vector; without
    kNN (an OpenSearch without the k-NN plugin) a plain float array that an exact cosine script
    reads from _source (doc values only so that `exists` finds the items that have one)."""
    if dims < 1:
        raise ValueError(f"embedding dimension must be >= 1; got {dims}")
    if not knn:
        if flavor == "elasticsearch":
            return {"type": "dense_vector", "dims": dims, "index": False}
        return {"type": "float", "index": False, "doc_values": True}
    if flavor == "elasticsearch":
        # Explicit float HNSW: newer ES defaults to quantised indexes, which change neighbours.
        return {
            "type": "dense_vector",
            "dims": dims,
            "index": True,
            "similarity": "cosine",
            "index_options": {"type": "hnsw", "m": 16, "ef_construction": 100},
        }
    return {
        "type": "knn_vector",
        "dimension": dims,
        "method": {"name": "hnsw", "space_type": "cosinesimil", "engine": "lucene"},
    }


def users_mapping() -> dict[str, Any]:
    return {
        "dynamic": "strict",
        **_NO_DETECTION,
        "dynamic_templates": _ATTR_TEMPLATES,
        "properties": {"user_id": _KEYWORD, "attrs": {"type": "object", "dynamic": True}},
    }


def recs_mapping() -> dict[str, Any]:
    # One document per user: fetched by id, never searched by rank, so the arrays stay unindexed.
    return {
        "dynamic": "strict",
        "properties": {
            "user_id": _KEYWORD,
            "ranks": {"type": "integer", "index": False},
            "items": {"type": "keyword", "index": False},
            "scores": {"type": "double", "index": False},
            "sources": {"type": "keyword", "index": False},
        },
    }


def meta_mapping() -> dict[str, Any]:
    return {
        "dynamic": "strict",
        "properties": {
            "id": {"type": "long"},
            "model": _KEYWORD,
            "created_at_us": {"type": "long"},
            "n_users": {"type": "long"},
            "n_rows": {"type": "long"},
            "deleted": {"type": "boolean"},
        },
    }


def feed_mapping() -> dict[str, Any]:
    """The change feed's one document (search_feed.py): never searched, read by a realtime GET
    and changed only by its two scripts."""
    return {
        "dynamic": "strict",
        "properties": {
            "next": {"type": "long"},  # the last sequence number handed out
            "pending": {"type": "object", "enabled": False},  # [{lo, hi, at}] not yet published
            "erasures": {"type": "long", "index": False},  # published erasures above the horizon
            "erased": {"type": "long"},  # the newest erasure at or below the horizon
        },
    }


def settings_mapping() -> dict[str, Any]:
    return {
        "dynamic": "strict",
        "properties": {
            "version": {"type": "long"},
            "stored_at_us": {"type": "long"},
            "body": _STORED_ONLY,  # the settings as JSON text, returned exactly as stored
        },
    }


def index_settings(flavor: Flavor, shards: int, replicas: int, knn: bool = False) -> dict[str, Any]:
    if shards < 1 or replicas < 0:
        raise ValueError(f"shards must be >= 1 and replicas >= 0; got {shards}, {replicas}")
    settings: dict[str, Any] = {"number_of_shards": shards, "number_of_replicas": replicas}
    if knn and flavor == "opensearch":
        settings["knn"] = True  # static on OpenSearch: the items index must be born with it
    return {"index": settings}


def index_body(
    mapping: dict[str, Any],
    flavor: Flavor,
    shards: int = 1,
    replicas: int = 1,
    knn: bool = False,
) -> dict[str, Any]:
    return {"settings": index_settings(flavor, shards, replicas, knn), "mappings": mapping}


def events_template_body(
    names: Names, flavor: Flavor, shards: int = 1, replicas: int = 1
) -> dict[str, Any]:
    """Composable index template: every monthly index gets the mapping and joins the alias."""
    return {
        "index_patterns": [names.events_pattern],
        "priority": 200,
        "template": {
            "settings": index_settings(flavor, shards, replicas),
            "mappings": events_mapping(),
            "aliases": {names.events_alias: {}},
        },
    }


# -- aliases and retention ----------------------------------------------------------------------
def swap_alias_actions(
    alias: str, new_index: str, old_index: str | None, pattern: str
) -> dict[str, Any]:
    """One _aliases body, applied atomically: remove the alias from the old index and add it to
    the new one. The remove carries must_exist, so if another writer moved the alias meanwhile
    the whole call fails (without it the engines skip the remove, apply the add, and leave two
    indices behind one alias). With no old index, the remove covers every generation index
    (`pattern`): whatever another writer added meanwhile is taken off in the same call."""
    remove: dict[str, Any] = (
        {"index": old_index, "alias": alias, "must_exist": True}
        if old_index is not None
        else {"index": pattern, "alias": alias, "must_exist": False}
    )
    actions: list[dict[str, Any]] = [{"add": {"index": new_index, "alias": alias}}]
    if old_index != new_index:
        actions.insert(0, {"remove": remove})
    return {"actions": actions}


def alias_errors(response: dict[str, Any]) -> list[str]:
    """What failed in an _aliases response: not acknowledged, or (Elasticsearch 8.14+) a 200
    with `errors: true` and per-action results, which a plain status check takes for success."""
    failed = [
        f"{(r.get('action') or {}).get('type', '?')}: "
        f"{(r.get('error') or {}).get('reason') or r.get('status')}"
        for r in response.get("action_results") or []
        if r.get("error") or int(r.get("status", 200)) >= 300
    ]
    if response.get("errors") and not failed:
        failed.append("errors: true")
    if not response.get("acknowledged", False) and not failed:
        failed.append("not acknowledged")
    return failed


def mapping_conflicts(want: dict[str, Any], have: dict[str, Any]) -> list[str]:
    """Fields the store needs whose existing mapping differs in type (`field: want X, got Y`).
    Fields the index does not have yet are no conflict: strict mappings add nothing by
    themselves and put_mapping adds new ones."""
    out = []
    for name, spec in sorted(want.items()):
        got = have.get(name)
        if got is None or "type" not in spec:
            continue
        if got.get("type", "object") != spec["type"]:
            out.append(f"{name}: want {spec['type']}, got {got.get('type', 'object')}")
    return out


def expired_event_indices(
    names: Names, indices: list[str], now: datetime, retention_months: int
) -> list[str]:
    """Monthly event indices wholly older than the retention: the current month and the
    `retention_months - 1` before it are kept. Dropping an index is how retention is applied
    (a delete-by-query would rewrite segments for hours)."""
    if retention_months < 1:
        raise ValueError(f"retention_months must be >= 1; got {retention_months}")
    now = now.astimezone(UTC)
    first_kept = now.year * 12 + now.month - 1 - (retention_months - 1)
    out = []
    for index in indices:
        month = names.month_of(index)
        if month is None:
            continue
        year, mon = (int(p) for p in month.split("."))
        if year * 12 + mon - 1 < first_kept:
            out.append(index)
    return sorted(out)


__all__ = [
    "EMBEDDING",
    "FLAVORS",
    "Flavor",
    "Names",
    "alias_errors",
    "events_mapping",
    "events_template_body",
    "expired_event_indices",
    "feed_mapping",
    "index_body",
    "items_mapping",
    "mapping_conflicts",
    "meta_mapping",
    "month_expr",
    "recs_mapping",
    "settings_mapping",
    "swap_alias_actions",
    "users_mapping",
    "vector_mapping",
]
