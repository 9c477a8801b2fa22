"""Setting up an Elasticsearch/OpenSearch store, mixed into SearchStore: the server check at open
(engine, major, plugins), the similar-items mode (kNN or exact cosine) fixed at start-up, and the
layout (indices, the events template, stored scripts) created where missing and checked where
present: an index whose mapping conflicts with the store's is refused."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from feedrank.exceptions import StoreError
from feedrank.store.search_connect import SearchConfig, ServerInfo, as_json, check_server
from feedrank.store.search_feed import FEED_DOC, new_feed_doc
from feedrank.store.search_layout import (
    EMBEDDING,
    Flavor,
    Names,
    events_mapping,
    events_template_body,
    feed_mapping,
    index_body,
    items_mapping,
    mapping_conflicts,
    meta_mapping,
    settings_mapping,
    users_mapping,
    vector_mapping,
)
from feedrank.store.search_queries import GLM_SCRIPT_SOURCE, stored_script_body


def vector_search_mode(
    mode: str, server: ServerInfo, field: dict[str, Any] | None, host_url: str
) -> str:
    """'knn' or 'exact' (similar items), fixed at start-up: the URL's choice; under auto, what
    an existing items index's `embedding` field was built for, else kNN where the server has it
    (Elasticsearch always; OpenSearch with its k-NN plugin)."""
    has_knn = server.flavor == "elasticsearch" or server.has_knn_plugin
    if mode == "knn" and not has_knn:
        raise StoreError(
            f"vectors=knn needs the k-NN plugin on the OpenSearch server at {host_url}; its "
            f"plugins are {list(server.plugins)}: install it, or use vectors=exact (or auto)"
        )
    if mode != "auto":
        return mode
    if field is not None:
        exact = field.get("type") == "float" or field.get("index") is False
        return "exact" if exact else "knn"
    return "knn" if has_knn else "exact"


class LayoutSetup:
    """Needs the store's client and names (declared here for the type checker)."""

    if TYPE_CHECKING:
        client: Any
        config: SearchConfig
        names: Names
        flavor: Flavor
        server: ServerInfo
        vector_search: str
        _client_version: str
        _not_found: type[Exception]
        _transport_errors: tuple[type[Exception], ...]

        def _indices(self, pattern: str) -> list[str]: ...

    def _server(self) -> ServerInfo:
        version = check_server(
            self.flavor, as_json(self.client.info()), self._client_version, self.config.host_url
        )
        plugins: tuple[str, ...] = ()
        if self.flavor == "opensearch":
            rows = as_json(self.client.cat.plugins(format="json"))
            plugins = tuple(sorted({str(r.get("component", "")) for r in rows}))
        return ServerInfo(self.flavor, version, plugins)

    def _vector_search(self) -> str:
        field = self._properties(self.names.items).get(EMBEDDING)
        return vector_search_mode(self.config.vectors, self.server, field, self.config.host_url)

    def ensure_layout(self) -> None:
        """Create what is missing (idempotent): indices, the events template, stored scripts;
        an existing index whose mapping conflicts with the store's is a StoreError."""
        c, n, f = self.config, self.names, self.flavor
        knn = self.vector_search == "knn"
        wanted = (
            (n.items, items_mapping(f, knn=knn), knn),
            (n.users, users_mapping(), False),
            (n.meta, meta_mapping(), False),
            (n.feed, feed_mapping(), False),
            (n.settings, settings_mapping(), False),
        )
        self._check_mappings([(i, m) for i, m, _ in wanted])
        # Compiled now, in the score context, so a script error shows at setup, not at serving.
        self.client.put_script(
            id=n.glm_script, body=stored_script_body(GLM_SCRIPT_SOURCE), context="score"
        )
        self.client.indices.put_index_template(
            name=n.events_template, body=events_template_body(n, f, c.shards, c.replicas)
        )
        for index, mapping, knn_index in wanted:
            if not self.client.indices.exists(index=index):
                self._create_index(index, index_body(mapping, f, c.shards, c.replicas, knn_index))
                continue
            # An index of an older layout: the fields it lacks are added (items' `seq`, ...).
            have = self._properties(index)
            missing = {k: v for k, v in mapping["properties"].items() if k not in have}
            if missing:
                self.client.indices.put_mapping(index=index, body={"properties": missing})
        self._ensure_feed_doc()

    def _ensure_feed_doc(self) -> None:
        """The change feed's document, created once. A store written before the feed existed
        starts its sequence above every number its events and items already carry, so that
        those count as delivered and no number is handed out twice."""
        n = self.names
        try:
            self.client.get(index=n.feed, id=FEED_DOC)
            return
        except self._not_found:
            pass
        top = 0
        for index in (n.events_pattern, n.items):
            # The exact long of the top hit's sort value (a max aggregation is a double).
            sort = [{"seq": {"order": "desc", "unmapped_type": "long"}}]
            body = {
                "size": 1,
                "_source": False,
                "sort": sort,
                "query": {"exists": {"field": "seq"}},
            }
            try:
                hits = as_json(self.client.search(index=index, body=body))["hits"]["hits"]
            except self._not_found:
                continue
            top = max([top, *(int(h["sort"][0]) for h in hits)])
        try:
            self.client.index(
                index=n.feed, id=FEED_DOC, body=new_feed_doc(top), op_type="create", refresh="true"
            )
        except self._transport_errors as exc:
            if getattr(exc, "status_code", None) != 409 and "version_conflict" not in str(exc):
                raise  # 409: another process created it first

    def _check_mappings(self, wanted: list[tuple[str, dict[str, Any]]]) -> None:
        checks = [
            *wanted,
            *((i, events_mapping()) for i in self._indices(self.names.events_pattern)),
        ]
        for index, mapping in checks:
            props = dict(mapping["properties"])
            if EMBEDDING in self._properties(index) and index == self.names.items:
                props[EMBEDDING] = vector_mapping(self.flavor, 1, self.vector_search == "knn")
            conflicts = mapping_conflicts(props, self._properties(index))
            if conflicts:
                raise StoreError(
                    f"index '{index}' on {self.config.host_url} must have feedrank's mapping; "
                    f"its fields differ ({'; '.join(conflicts)}): drop the index, or use "
                    "another prefix in the store URL"
                )

    def _properties(self, index: str) -> dict[str, Any]:
        """The top-level fields of an index's mapping ({} when the index does not exist)."""
        try:
            mapping = as_json(self.client.indices.get_mapping(index=index))
        except self._not_found:
            return {}
        first: dict[str, Any] = next(iter(mapping.values()), {})
        props: dict[str, Any] = first.get("mappings", {}).get("properties", {})
        return props

    def _create_index(self, index: str, body: dict[str, Any]) -> bool:
        """False when it already exists (another process created it first)."""
        try:
            self.client.indices.create(index=index, body=body)
        except self._transport_errors as exc:
            if "resource_already_exists" in str(exc):
                return False
            raise
        return True


__all__ = ["LayoutSetup", "vector_search_mode"]
