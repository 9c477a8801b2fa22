"""Request bodies of the Elasticsearch/OpenSearch store: document ids, bulk actions, event
filters, the GLM's painless script with its candidate query and rescore window, and kNN.

Pure functions: frames and numbers in, JSON-able dicts out. Frames are prepared column-wise
with Polars; the generators only hand each prepared row to the client's bulk helper."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from typing import Any, TypeGuard

import polars as pl

from feedrank.store.search_layout import EMBEDDING, Flavor, Names, month_expr

MAX_ID_BYTES = 500  # Elasticsearch and OpenSearch reject an _id over 512 bytes
MAX_TERMS = 10_000  # terms per query, well below index.max_terms_count (65,536)
MAX_KNN = 10_000  # both engines cap k and num_candidates (ES) at 10,000
PAGE = 10_000  # hits per search: index.max_result_window's default
MISSING_LEVEL = "(missing)"  # features.encoder.MISSING: how a null level is looked up


def key_id(key: str) -> str:
    """A document id for an opaque key: the key itself, or '#' + SHA-256 when it is too long
    or starts with '#' (so raw and hashed ids can never collide)."""
    if len(key.encode()) <= MAX_ID_BYTES and not key.startswith("#"):
        return key
    return "#" + hashlib.sha256(key.encode()).hexdigest()


def _shorten(ids: pl.Series) -> pl.Series:
    """key_id over a column: only the (rare) over-long or '#'-led ids are hashed in Python."""
    long = (ids.str.len_bytes() > MAX_ID_BYTES) | ids.str.starts_with("#")
    if not long.any():
        return ids
    hashed = [key_id(v) if flag else v for v, flag in zip(ids, long, strict=True)]
    return pl.Series(ids.name, hashed, dtype=pl.String)


def event_doc_ids(events: pl.DataFrame) -> pl.Series:
    """The idempotence key of each event, as the SQLite store's unique indexes define it: its
    event_id, or else (user_id, item_id, type, timestamp to the microsecond). User and item are
    length-prefixed so that no two different keys spell the same id."""
    natural = pl.concat_str(
        [
            pl.lit("n:"),
            pl.col("user_id").str.len_bytes().cast(pl.String),
            pl.lit(":"),
            pl.col("user_id"),
            pl.col("item_id").str.len_bytes().cast(pl.String),
            pl.lit(":"),
            pl.col("item_id"),
            pl.col("timestamp").dt.epoch("us").cast(pl.String),
            pl.lit(":"),
            pl.col("type"),
        ]
    )
    ids = events.select(
        pl.when(pl.col("event_id").is_not_null())
        .then(pl.lit("e:") + pl.col("event_id"))
        .otherwise(natural)
        .alias("_id")
    ).to_series()
    return _shorten(ids)


# -- bulk actions ------------------------------------------------------------------------------
def event_actions(events: pl.DataFrame, names: Names, seq0: int) -> Iterator[dict[str, Any]]:
    """`create` actions (a 409 means: already stored) into each event's monthly index, routed by
    user so a user's events sit on one shard per month. Event n gets the change feed's number
    seq0 + n (search_feed.py), which also orders equal timestamps."""
    ts_us = pl.col("timestamp").dt.epoch("us")
    prepared = events.select(
        _id=event_doc_ids(events),
        _index=pl.lit(names.events_index("")) + month_expr(pl.col("timestamp")),
        _routing=pl.col("user_id"),
        event_id=pl.col("event_id"),
        user_id=pl.col("user_id"),
        item_id=pl.col("item_id"),
        type=pl.col("type"),
        timestamp=ts_us.floordiv(1000),
        ts_us=ts_us,
        seq=pl.int_range(pl.len(), dtype=pl.Int64) + seq0,
        value=pl.col("value"),
        position=pl.col("position"),
        device=pl.col("device"),
        context=pl.col("context"),
    )
    for row in prepared.iter_rows(named=True):
        meta = {"_op_type": "create", "_index": row.pop("_index"), "_id": row.pop("_id")}
        meta["_routing"] = row.pop("_routing")
        yield {**meta, "_source": row}


def level_columns(frame: pl.DataFrame, id_cols: Sequence[str]) -> list[str]:
    """Attribute columns with scalar values: each gets an `lv.<name>` keyword (its value as
    text, the exact cast the feature code uses) that the GLM script reads."""
    return [
        c
        for c in frame.columns
        if c not in id_cols
        and c != EMBEDDING
        and not isinstance(frame.schema[c], pl.List | pl.Struct | pl.Array)
    ]


def user_actions(users: pl.DataFrame, names: Names) -> Iterator[dict[str, Any]]:
    attrs = [c for c in users.columns if c != "user_id"]
    prepared = users.select(_id=_shorten(users["user_id"]), user_id="user_id")
    rows = users.select(attrs).iter_rows(named=True) if attrs else iter([{}] * users.height)
    for (doc_id, user_id), a in zip(prepared.iter_rows(), rows, strict=True):
        yield {
            "_op_type": "index",
            "_index": names.users,
            "_id": doc_id,
            "_source": {"user_id": user_id, "attrs": a},
        }


# Replaces what the caller owns (attributes, levels, created_at, embedding) and keeps the
# numeric features (f.*) published for the ranking model.
ITEM_UPSERT_SCRIPT = """
for (def e : params.doc.entrySet()) { ctx._source[e.getKey()] = e.getValue(); }
if (!params.doc.containsKey('embedding')) { ctx._source.remove('embedding'); }
""".strip()


def item_actions(items: pl.DataFrame, names: Names, seq: int = 0) -> Iterator[dict[str, Any]]:
    """Scripted upserts; `seq` is the change feed's number of this upsert (search_feed.py)."""
    attrs = [c for c in items.columns if c not in ("item_id", "created_at", EMBEDDING)]
    levels = level_columns(items, ("item_id", "created_at"))
    created_us = (
        pl.col("created_at").dt.epoch("us")
        if "created_at" in items.columns
        else pl.lit(None, pl.Int64)  # unknown: the item is a candidate at any time
    )
    prepared = items.select(
        _id=_shorten(items["item_id"]),
        item_id="item_id",
        created_at=created_us.floordiv(1000),
        created_at_us=created_us,
        lv=pl.struct([pl.col(c).cast(pl.String) for c in levels]) if levels else pl.lit(None),
        seq=pl.lit(seq, pl.Int64),
    )
    attr_rows = items.select(attrs).iter_rows(named=True) if attrs else iter([{}] * items.height)
    vectors = items[EMBEDDING].to_list() if EMBEDDING in items.columns else [None] * items.height
    for row, a, vec in zip(prepared.iter_rows(named=True), attr_rows, vectors, strict=True):
        doc_id = row.pop("_id")
        row["attrs"] = a
        row["lv"] = row["lv"] or {}
        if usable_vector(vec):  # a zero vector has no cosine: the item is stored without one
            row[EMBEDDING] = [float(x) for x in vec]
        yield {
            "_op_type": "update",
            "_index": names.items,
            "_id": doc_id,
            "_source": {
                "script": {
                    "source": ITEM_UPSERT_SCRIPT,
                    "lang": "painless",
                    "params": {"doc": row},
                },
                "upsert": row,
            },
        }


def item_feature_actions(
    fields: pl.DataFrame, names: Names, at_us: int
) -> Iterator[dict[str, Any]]:
    """Partial updates writing the published numeric features (`f.<name>` columns) of items
    that exist (an item not yet stored is skipped by the caller's 404 handling)."""
    fcols = [c for c in fields.columns if c.startswith("f.")]
    prepared = fields.select(*fcols, _id=_shorten(fields["item_id"]))
    for row in prepared.iter_rows(named=True):
        doc_id = row.pop("_id")
        doc = {"f": {k[2:]: v for k, v in row.items()}, "features_at_us": at_us}
        yield {"_op_type": "update", "_index": names.items, "_id": doc_id, "_source": {"doc": doc}}


def recommendation_actions(recs: pl.DataFrame, index: str) -> Iterator[dict[str, Any]]:
    """One document per user holding the user's ranked list (fetched by id: one realtime GET)."""
    grouped = (
        recs.sort("user_id", "rank")
        .group_by("user_id", maintain_order=True)
        .agg(
            ranks=pl.col("rank"),
            items=pl.col("item_id"),
            scores=pl.col("score"),
            sources=pl.col("source"),
        )
    )
    grouped = grouped.with_columns(_id=_shorten(grouped["user_id"]))
    for row in grouped.iter_rows(named=True):
        yield {"_op_type": "index", "_index": index, "_id": row.pop("_id"), "_source": row}


# -- event filters -----------------------------------------------------------------------------
def events_query(
    start_us: int | None,
    end_us: int | None,
    user_ids: Sequence[str] | None = None,
    types: Sequence[str] | None = None,
) -> dict[str, Any]:
    """start <= ts < end on the exact microsecond field; users and types as terms filters."""
    filters: list[dict[str, Any]] = []
    if start_us is not None or end_us is not None:
        rng: dict[str, int] = {}
        if start_us is not None:
            rng["gte"] = start_us
        if end_us is not None:
            rng["lt"] = end_us
        filters.append({"range": {"ts_us": rng}})
    if user_ids is not None:
        if len(user_ids) > MAX_TERMS:
            raise ValueError(f"at most {MAX_TERMS} user ids per query; got {len(user_ids)}")
        filters.append({"terms": {"user_id": list(user_ids)}})
    if types is not None:
        filters.append({"terms": {"type": list(types)}})
    return {"bool": {"filter": filters}} if filters else {"match_all": {}}


def user_query(user_id: str) -> dict[str, Any]:
    return {"term": {"user_id": user_id}}


# -- ranking: the GLM in the engine ------------------------------------------------------------
# The logit of feedrank's GLM split by scope (see store/search_ranking.py, which builds the
# params and holds a Python twin of this script). Keys avoid Java keywords ('default').
GLM_SCRIPT_SOURCE = """
double z = ((Number) params.base).doubleValue();
long nowUs = ((Number) params.now_us).longValue();
for (def n : params.num) {
  String fld = n.field;
  double x = ((Number) n.missing).doubleValue();
  if (doc.containsKey(fld) && doc[fld].size() > 0) { x = doc[fld].value; }
  if (n.log) { x = Math.log1p(Math.max(x, 0.0)); }
  double v = (x - ((Number) n.mean).doubleValue()) / ((Number) n.std).doubleValue();
  if (Double.isNaN(v) || Double.isInfinite(v)) { v = 0.0; }
  z += ((Number) n.coef).doubleValue() * v;
}
if (params.age != null && doc['created_at_us'].size() > 0) {
  def a = params.age;
  long secs = (nowUs - doc['created_at_us'].value) / 1000000L;
  double x = Math.max(secs / 86400.0, 0.0);
  if (a.log) { x = Math.log1p(x); }
  double v = (x - ((Number) a.mean).doubleValue()) / ((Number) a.std).doubleValue();
  if (Double.isNaN(v) || Double.isInfinite(v)) { v = 0.0; }
  z += ((Number) a.coef).doubleValue() * v;
}
for (def c : params.cat) {
  String fld = c.field;
  String lvl = '(missing)';
  if (doc.containsKey(fld) && doc[fld].size() > 0) { lvl = doc[fld].value; }
  def m = c.map;
  z += m.containsKey(lvl) ? ((Number) m.get(lvl)).doubleValue() : ((Number) c.other).doubleValue();
}
for (def s : params.share) {
  String fld = s.field;
  if (doc.containsKey(fld) && doc[fld].size() > 0) {
    String lvl = doc[fld].value;
    def m = s.map;
    z += m.containsKey(lvl) ? ((Number) m.get(lvl)).doubleValue() : ((Number) s.other).doubleValue();
  } else {
    z += ((Number) s.missing).doubleValue();
  }
}
String id = doc['item_id'].value;
z += params.pair.containsKey(id) ? ((Number) params.pair.get(id)).doubleValue() : ((Number) params.pair_other).doubleValue();
z = Math.max(-35.0, Math.min(35.0, z));
return 1.0 / (1.0 + Math.exp(-z));
""".strip()


def stored_script_body(source: str) -> dict[str, Any]:
    return {"script": {"lang": "painless", "source": source}}


def candidate_query(
    now_us: int, exclude_item_ids: Sequence[str] = (), max_age_days: float | None = None
) -> dict[str, Any]:
    """Items that exist at serving time (created_at <= now or unknown, as the Python ranking's
    catalogue), not already engaged with by the user, optionally only recent ones (a known
    created_at within max_age_days)."""
    rng: dict[str, int] = {"lte": now_us}
    if max_age_days is not None:
        if max_age_days <= 0:
            raise ValueError(f"max_age_days must be > 0; got {max_age_days}")
        rng["gte"] = now_us - int(max_age_days * 86_400_000_000)
        exists: dict[str, Any] = {"range": {"created_at_us": rng}}
    else:  # an item of unknown creation time exists at any time (Catalogue.candidates)
        unknown = {"bool": {"must_not": [{"exists": {"field": "created_at_us"}}]}}
        exists = {"bool": {"should": [{"range": {"created_at_us": rng}}, unknown]}}
    query: dict[str, Any] = {"filter": [exists]}
    if exclude_item_ids:
        excluded = list(exclude_item_ids)
        query["must_not"] = [
            {"terms": {"item_id": excluded[i : i + MAX_TERMS]}}
            for i in range(0, len(excluded), MAX_TERMS)
        ]
    return {"bool": query}


def glm_search_body(
    script_id: str,
    params: dict[str, Any],
    now_us: int,
    k: int,
    exclude_item_ids: Sequence[str] = (),
    max_age_days: float | None = None,
    window: int = 2_000,
    prefilter_field: str | None = None,
    margin: int = 20,
) -> dict[str, Any]:
    """Filtered candidates, then the stored GLM script in a rescore window (scores = the
    probability, in (0, 1)). The exact double is returned as a script field too: _score is a
    32-bit float, so the caller re-sorts the k + margin hits by it.

    First phase: every candidate scores 1 (the window holds the first `window` per shard), or,
    with `prefilter_field` (e.g. 'f.item_ctr'), the candidates with the largest value of it."""
    if k < 1 or window < 1:
        raise ValueError(f"k and window must be >= 1; got k={k}, window={window}")
    size = min(k + margin, window)
    candidates = candidate_query(now_us, exclude_item_ids, max_age_days)
    if prefilter_field is None:
        first: dict[str, Any] = {"constant_score": {"filter": candidates}}
    else:
        first = {
            "function_score": {
                "query": candidates,
                "field_value_factor": {
                    "field": prefilter_field,
                    "modifier": "log1p",
                    "missing": 0,
                },
                "boost_mode": "replace",
            }
        }
    script = {"id": script_id, "params": params}
    return {
        "size": size,
        "track_total_hits": True,
        "_source": ["item_id"],
        "query": first,
        "rescore": {
            "window_size": window,
            "query": {
                "rescore_query": {"script_score": {"query": {"match_all": {}}, "script": script}},
                "query_weight": 0.0,
                "rescore_query_weight": 1.0,
                "score_mode": "total",
            },
        },
        "script_fields": {"p": {"script": script}},
    }


def knn_body(flavor: Flavor, vector: Sequence[float], k: int) -> dict[str, Any]:
    """Nearest items by cosine on the embedding (k + 1: the query item finds itself first).
    Elasticsearch's num_candidates is 4 (k + 1), at least 100 and at most 10,000, its cap."""
    vec = _query_vector(vector, k)
    if flavor == "elasticsearch":
        return {
            "size": k + 1,
            "_source": ["item_id"],
            "knn": {
                "field": EMBEDDING,
                "query_vector": vec,
                "k": k + 1,
                "num_candidates": min(max(100, 4 * (k + 1)), MAX_KNN),
            },
        }
    return {
        "size": k + 1,
        "_source": ["item_id"],
        "query": {"knn": {EMBEDDING: {"vector": vec, "k": k + 1}}},
    }


# Exact cosine over every item with a vector, as kNN scores it: (1 + cos) / 2, in [0, 1].
EXACT_COSINE_SOURCE = """
def v = params._source.embedding;
if (v == null) { return 0.0; }
double dot = 0.0; double nn = 0.0;
for (int i = 0; i < v.size(); i++) {
  double x = ((Number) v.get(i)).doubleValue();
  dot += x * ((Number) params.q.get(i)).doubleValue();
  nn += x * x;
}
if (nn == 0.0) { return 0.0; }
return (1.0 + dot / Math.sqrt(nn) / params.qn) / 2.0;
""".strip()


def exact_cosine_body(flavor: Flavor, vector: Sequence[float], k: int) -> dict[str, Any]:
    """The same answer as knn_body by brute force: a script_score over the items that have a
    vector (Elasticsearch's own cosineSimilarity; on OpenSearch without the k-NN plugin, a
    painless loop over the vector in _source)."""
    vec = _query_vector(vector, k)
    if flavor == "elasticsearch":
        script: dict[str, Any] = {
            "source": f"(cosineSimilarity(params.q, '{EMBEDDING}') + 1.0) / 2.0",
            "params": {"q": vec},
        }
    else:
        qn = sum(x * x for x in vec) ** 0.5
        script = {"source": EXACT_COSINE_SOURCE, "lang": "painless", "params": {"q": vec, "qn": qn}}
    return {
        "size": k + 1,
        "_source": ["item_id"],
        "query": {"script_score": {"query": {"exists": {"field": EMBEDDING}}, "script": script}},
    }


def _query_vector(vector: Sequence[float], k: int) -> list[float]:
    if not 1 <= k < MAX_KNN:
        raise ValueError(f"k must be between 1 and {MAX_KNN - 1} (the engines' kNN cap); got {k}")
    vec = [float(x) for x in vector]
    if not usable_vector(vec):
        raise ValueError("a query vector must be finite and not all zeros (cosine needs a norm)")
    return vec


def usable_vector(vector: Sequence[float] | None) -> TypeGuard[Sequence[float]]:
    """Whether cosine can use it: both engines reject a zero vector under cosine (and JSON has
    no NaN), so such a vector is not written and its item counts as having none."""
    if vector is None:
        return False
    vec = [float(x) for x in vector]
    return bool(vec) and all(math.isfinite(x) for x in vec) and any(x != 0.0 for x in vec)


def source_filter(fields: list[str], excludes_vectors: bool) -> list[str] | dict[str, Any]:
    """`_source` of a search that reads `fields`: on Elasticsearch 9.2+ vectors are kept out of
    _source unless the request asks (`exclude_vectors: false`)."""
    if excludes_vectors and EMBEDDING in fields:
        return {"includes": fields, "exclude_vectors": False}
    return fields


__all__ = [
    "EXACT_COSINE_SOURCE",
    "GLM_SCRIPT_SOURCE",
    "ITEM_UPSERT_SCRIPT",
    "MAX_KNN",
    "PAGE",
    "candidate_query",
    "event_actions",
    "event_doc_ids",
    "events_query",
    "exact_cosine_body",
    "glm_search_body",
    "item_actions",
    "item_feature_actions",
    "key_id",
    "knn_body",
    "recommendation_actions",
    "source_filter",
    "stored_script_body",
    "usable_vector",
    "user_actions",
]
