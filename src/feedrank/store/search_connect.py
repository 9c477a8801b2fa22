"""Connecting to Elasticsearch or OpenSearch: the store URL, its options, the official client
for each engine (imported only when used, so either extra alone is enough), the server check
(engine and major version), one-line errors, and the error a partly rejected bulk write raises.

    elasticsearch+http(s)://[user:password@]host[:port][/?prefix=feedrank_&replicas=0&...]
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from feedrank.exceptions import MissingExtraError, RowError, StoreError
from feedrank.store.search_layout import Flavor, Names

CLIENTS = {"elasticsearch": "elasticsearch", "opensearch": "opensearchpy"}
# Server majors whose request and response shapes this store follows.
SERVER_MAJORS: dict[Flavor, tuple[int, ...]] = {"elasticsearch": (8, 9), "opensearch": (2, 3)}
# The pip requirement of an Elasticsearch client for each server major (a client must not be
# newer than the server: 9.x clients send version-9 requests, which Elasticsearch 8 rejects).
ES_CLIENT_FOR = {8: "elasticsearch>=8.13,<9", 9: "elasticsearch>=9,<10"}
_TRUE = ("1", "true", "yes", "on")


class BulkWriteError(StoreError):
    """Some documents of a bulk write were rejected; the others were written. Carries one
    RowError per rejected document (line = its 1-based position in the written frame)."""

    def __init__(self, errors: list[RowError], written: int) -> None:
        self.errors, self.written = errors, written
        shown = "; ".join(str(e) for e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        super().__init__(f"{len(errors)} document(s) rejected, {written} written: {shown}{more}")


@dataclass(frozen=True)
class SearchConfig:
    flavor: Flavor
    host_url: str  # http(s)://host:port
    prefix: str = "feedrank_"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    api_key: str | None = field(default=None, repr=False)
    refresh: bool = True
    shards: int = 1
    replicas: int = 1
    retention_months: int | None = None
    verify_certs: bool = True
    ca_certs: str | None = None
    timeout: float = 30.0
    # similar items: kNN (Elasticsearch dense_vector, OpenSearch k-NN plugin, Lucene HNSW) or
    # exact cosine by script_score; auto takes kNN where the server has it.
    vectors: str = "auto"
    # seconds a write may hold a block of the change feed before it is taken for dead (its
    # block expires and readers move on; search_feed.py)
    feed_lease: float = 300.0


VECTOR_MODES = ("auto", "knn", "exact")


def parse_url(url: str) -> SearchConfig:
    """`elasticsearch+https://user:pw@host:9200/?prefix=x_&replicas=0` -> SearchConfig."""
    scheme, _, _ = url.partition("://")
    flavor, _, transport = scheme.lower().partition("+")
    if flavor not in CLIENTS or transport not in ("http", "https"):
        raise StoreError(
            "search store URL must start with one of ['elasticsearch+http', "
            f"'elasticsearch+https', 'opensearch+http', 'opensearch+https']; got '{url}'"
        )
    parts = urlsplit(url.replace(scheme, transport, 1))
    if not parts.hostname:
        raise StoreError(f"search store URL must name a host; got '{url}'")
    if parts.path not in ("", "/"):
        raise StoreError(f"search store URL must have no path (use ?prefix=); got '{parts.path}'")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname  # IPv6
    q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    known = {
        "prefix",
        "refresh",
        "shards",
        "replicas",
        "retention_months",
        "verify_certs",
        "ca_certs",
        "api_key",
        "timeout",
        "vectors",
        "feed_lease",
    }
    unknown = sorted(set(q) - known)
    if unknown:
        raise StoreError(f"search store URL options must be among {sorted(known)}; got {unknown}")
    vectors = q.get("vectors", "auto")
    if vectors not in VECTOR_MODES:
        raise StoreError(
            f"search store URL option vectors must be one of {list(VECTOR_MODES)}; got '{vectors}'"
        )
    try:
        Names(q.get("prefix", "feedrank_"))  # validates the prefix
        return SearchConfig(
            flavor=flavor,  # type: ignore[arg-type]
            host_url=f"{transport}://{host}:{parts.port or 9200}",
            prefix=q.get("prefix", "feedrank_"),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            api_key=q.get("api_key"),
            refresh=q.get("refresh", "true").lower() in _TRUE,
            shards=int(q.get("shards", 1)),
            replicas=int(q.get("replicas", 1)),
            retention_months=int(q["retention_months"]) if "retention_months" in q else None,
            verify_certs=q.get("verify_certs", "true").lower() in _TRUE,
            ca_certs=q.get("ca_certs"),
            timeout=float(q.get("timeout", 30)),
            vectors=vectors,
            feed_lease=_non_negative(float(q.get("feed_lease", 300)), "feed_lease"),
        )
    except ValueError as exc:
        raise StoreError(f"search store URL option is not valid: {exc} (url '{url}')") from exc


def _non_negative(x: float, name: str) -> float:
    if not x >= 0:  # also NaN
        raise ValueError(f"{name} must be >= 0; got {x}")
    return x


@dataclass(frozen=True)
class ServerInfo:
    """What the store needs to know of the server it talks to."""

    flavor: Flavor
    version: tuple[int, int, int]
    plugins: tuple[str, ...] = ()

    @property
    def excludes_vectors(self) -> bool:
        """Elasticsearch 9.2+ leaves dense vectors out of _source unless a search asks."""
        return self.flavor == "elasticsearch" and self.version[:2] >= (9, 2)

    @property
    def has_knn_plugin(self) -> bool:
        return any("knn" in p.lower() for p in self.plugins)


def _version(number: str) -> tuple[int, int, int]:
    parts = [int(p) if p.isdigit() else 0 for p in number.split("-")[0].split(".")[:3]]
    major, minor, patch = [*parts, 0, 0, 0][:3]
    return major, minor, patch


def check_server(
    flavor: Flavor, info: dict[str, Any], client_version: str, url: str
) -> tuple[int, int, int]:
    """The server's version, or a StoreError saying what to change: the engine must be the
    URL's, its major among SERVER_MAJORS, and an Elasticsearch client no newer than it."""
    v = info.get("version") or {}
    number = str(v.get("number", "?"))
    engine = v.get("distribution") or "elasticsearch"
    if engine != flavor:
        raise StoreError(
            f"the server at {url} must be {flavor} (the URL's scheme); got {engine} {number}: "
            f"use a {engine}+http(s):// store URL"
        )
    version = _version(number)
    allowed = list(SERVER_MAJORS[flavor])
    if version[0] not in allowed:
        raise StoreError(
            f"the {flavor} server's major version must be one of {allowed}; got {number} at {url}"
        )
    client_major = _version(client_version)[0]
    if flavor == "elasticsearch" and client_major > version[0]:
        raise StoreError(
            f"the elasticsearch client's major must not be newer than the server's; got client "
            f"{client_version} and server {number}: pip install '{ES_CLIENT_FOR[version[0]]}'"
        )
    return version


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one short line (client errors can span lines and carry whole bodies)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def explain(
    exc: Exception, what: str, flavor: Flavor, host_url: str, url: str, unreachable: type[Exception]
) -> str:
    """A client error as one line saying what failed and what to fix (the CLI exits 2 with it,
    the API answers 503)."""
    if isinstance(exc, unreachable):
        return (
            f"cannot reach the {flavor} server at {host_url} while "
            f"{what}: is it running, and are the host and port right? ({one_line(exc)})"
        )
    text = one_line(exc)
    if "UnsupportedProduct" in type(exc).__name__ or "not Elasticsearch" in text:
        return (
            f"the server at {host_url} must be Elasticsearch for an "
            f"elasticsearch+ URL; the client refused it ({text}): an OpenSearch server "
            "takes an opensearch+http(s):// URL"
        )
    if "index_not_found" in text:
        return (
            f"{what} needs an index that does not exist on {url} ({text}): open the "
            "store again to create its indices, or check the URL's prefix"
        )
    if "mapper_parsing" in text or "illegal_argument" in text:
        return (
            f"{what} was refused by the index mapping on {url} ({text}): the data must "
            "match the mapping, or the index must be recreated (drop it, or use another prefix)"
        )
    return f"{what} on {url} failed: {text}"


def client_module(flavor: Flavor) -> ModuleType:
    """The engine's client package, or MissingExtraError naming the extra that installs it."""
    try:
        return importlib.import_module(CLIENTS[flavor])
    except ImportError as exc:
        raise MissingExtraError(
            f"the {flavor} store needs its client: pip install 'feedrank[{flavor}]' ({exc})"
        ) from exc


def as_json(resp: Any) -> Any:
    """A response as plain JSON: elasticsearch-py wraps bodies, opensearch-py does not."""
    return getattr(resp, "body", resp)


def connect(c: SearchConfig, mod: ModuleType) -> Any:
    """The official client for the config (retries timeouts; 3 attempts per request)."""
    if c.flavor == "elasticsearch":
        kw: dict[str, Any] = {
            "request_timeout": c.timeout,
            "max_retries": 3,
            "retry_on_timeout": True,
            "verify_certs": c.verify_certs,
        }
        if c.username:
            kw["basic_auth"] = (c.username, c.password or "")
        if c.api_key:
            kw["api_key"] = c.api_key
        if c.ca_certs:
            kw["ca_certs"] = c.ca_certs
        return mod.Elasticsearch(c.host_url, **kw)
    kw = {
        "timeout": c.timeout,
        "max_retries": 3,
        "retry_on_timeout": True,
        "verify_certs": c.verify_certs,
        "use_ssl": c.host_url.startswith("https"),
    }
    if c.username:
        kw["http_auth"] = (c.username, c.password or "")
    if c.api_key:
        kw["headers"] = {"Authorization": f"ApiKey {c.api_key}"}
    if c.ca_certs:
        kw["ca_certs"] = c.ca_certs
    return mod.OpenSearch([c.host_url], **kw)


__all__ = [
    "CLIENTS",
    "ES_CLIENT_FOR",
    "SERVER_MAJORS",
    "VECTOR_MODES",
    "BulkWriteError",
    "SearchConfig",
    "ServerInfo",
    "as_json",
    "check_server",
    "client_module",
    "connect",
    "explain",
    "one_line",
    "parse_url",
]
