"""Settings versions of the Elasticsearch/OpenSearch store, mixed into SearchStore: one document
per version in `{prefix}settings` (id `v<N>`), holding the settings as JSON text exactly as the
SQLite store keeps them. A version is taken by creating its document: of two processes storing
settings at once, one gets N and the other, refused (409), takes N + 1. Versions are never
deleted, so numbers are never reused; any process reads them (a realtime GET for one version)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from feedrank.exceptions import NotFoundError, StoreError
from feedrank.store.search_connect import as_json
from feedrank.store.search_layout import Names
from feedrank.store.search_queries import PAGE

TAKE_ATTEMPTS = 100  # writers racing for the next version number
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def settings_doc(settings: dict[str, Any], version: int, at_us: int) -> dict[str, Any]:
    body = json.dumps(settings, sort_keys=True, default=list)  # as the SQLite store stores it
    return {"version": version, "stored_at_us": at_us, "body": body}


def version_id(version: int) -> str:
    return f"v{version}"


class SettingsVersions:
    """Needs the store's client, names and helpers (declared here for the type checker)."""

    if TYPE_CHECKING:
        client: Any
        names: Names
        _not_found: type[Exception]
        _conflict: type[Exception]

        def _search(self, index: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]: ...

        def _missing(self, index: str, exc: Exception | None = None) -> StoreError: ...

    def _newest_settings(self) -> dict[str, Any] | None:
        body = {"size": 1, "sort": [{"version": "desc"}]}
        hits = self._search(self.names.settings, body)["hits"]["hits"]
        return hits[0]["_source"] if hits else None

    def put_settings(self, settings: dict[str, Any]) -> int:
        newest = self._newest_settings()
        version = int(newest["version"]) + 1 if newest else 1
        for _ in range(TAKE_ATTEMPTS):
            doc = settings_doc(settings, version, time.time_ns() // 1000)
            try:
                self.client.index(
                    index=self.names.settings,
                    id=version_id(version),
                    body=doc,
                    op_type="create",
                    refresh="true",
                )
                return version
            except self._conflict:  # another process took this number: the next one
                version += 1
            except self._not_found as exc:
                raise self._missing(self.names.settings, exc) from exc
        raise StoreError(
            f"storing settings in {self.names.settings} must take a free version number; "
            f"{TAKE_ATTEMPTS} were taken by other writers meanwhile: try again"
        )

    def settings_versions(self) -> list[tuple[int, datetime]]:
        body: dict[str, Any] = {
            "size": PAGE,
            "sort": [{"version": "asc"}],
            "_source": ["version", "stored_at_us"],
        }
        out: list[tuple[int, datetime]] = []
        while True:
            hits = self._search(self.names.settings, body)["hits"]["hits"]
            out += [
                (
                    int(h["_source"]["version"]),
                    EPOCH + timedelta(microseconds=int(h["_source"]["stored_at_us"])),
                )
                for h in hits
            ]
            if len(hits) < PAGE:
                return out
            body["search_after"] = hits[-1]["sort"]

    def stored_settings(self, version: int | None = None) -> dict[str, Any] | None:
        if version is None:
            newest = self._newest_settings()
            return json.loads(newest["body"]) if newest else None
        try:
            doc = as_json(self.client.get(index=self.names.settings, id=version_id(version)))
        except self._not_found as exc:
            if "index_not_found" in str(exc) or "no such index" in str(exc):
                raise self._missing(self.names.settings, exc) from exc
            raise NotFoundError(f"settings version {version} does not exist") from exc
        loaded: dict[str, Any] = json.loads(doc["_source"]["body"])
        return loaded


__all__ = ["SettingsVersions", "settings_doc", "version_id"]
