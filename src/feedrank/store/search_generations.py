"""Recommendation generations in Elasticsearch/OpenSearch, mixed into SearchStore: one index per
generation, one document per user, a meta document each, and the alias `{prefix}recs` that
points at the active one. A generation is written whole into its own index before anything
points at it; activating it is one atomic, checked _aliases call; a generation whose write
failed is deleted, never activated."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import polars as pl

from feedrank.exceptions import NotFoundError, StoreError
from feedrank.store.base import RECOMMENDATION_COLUMNS, Generation
from feedrank.store.search_connect import SearchConfig, as_json, one_line
from feedrank.store.search_frames import recommendations_frame
from feedrank.store.search_layout import (
    Flavor,
    Names,
    alias_errors,
    index_body,
    recs_mapping,
    swap_alias_actions,
)
from feedrank.store.search_queries import key_id, recommendation_actions

SWAP_ATTEMPTS = 3  # another writer moving the alias between our read and our swap: read again


class GenerationStore:
    """Needs the store's client, names and helpers (declared here for the type checker)."""

    if TYPE_CHECKING:
        client: Any
        config: SearchConfig
        names: Names
        flavor: Flavor
        url: str
        _not_found: type[Exception]
        _transport_errors: tuple[type[Exception], ...]

        def _search(self, index: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]: ...

        def _bulk(
            self, actions: Iterable[dict[str, Any]], ids: Sequence[str], what: str
        ) -> tuple[int, int]: ...

        def _indices(self, pattern: str) -> list[str]: ...

        def _create_index(self, index: str, body: dict[str, Any]) -> bool: ...

        def _require(self, index: str) -> None: ...

    def write_generation(self, recs: pl.DataFrame, model: str, activate: bool = True) -> int:
        recs = recs.select(
            [
                pl.col(c).cast(t) if c in recs.columns else pl.lit(None, t).alias(c)
                for c, t in RECOMMENDATION_COLUMNS.items()
            ]
        )
        n, c = self.names, self.config
        self._require(n.meta)
        gen = self._max_generation() + 1
        # Creating the index reserves the id: a concurrent writer that picked the same one fails.
        while not self._create_index(
            n.recs_index(gen), index_body(recs_mapping(), self.flavor, c.shards, c.replicas)
        ):
            gen += 1
        users = recs["user_id"].unique(maintain_order=True).to_list()
        try:
            self._bulk(recommendation_actions(recs, n.recs_index(gen)), users, "recommendation")
            self.client.indices.refresh(index=n.recs_index(gen))
            meta = {
                "id": gen,
                "model": model,
                "created_at_us": time.time_ns() // 1000,
                "n_users": len(users),
                "n_rows": recs.height,
                "deleted": False,
            }
            self.client.index(index=n.meta, id=f"gen-{gen}", body=meta, refresh="true")
        except BaseException:
            # Half a generation is never listed nor activated: its index goes.
            self._discard(gen)
            raise
        if activate:
            self.activate_generation(gen)
        return gen

    def _discard(self, gen: int) -> None:
        with contextlib.suppress(*self._transport_errors):
            self.client.indices.delete(index=self.names.recs_index(gen))
        with contextlib.suppress(*self._transport_errors):
            self.client.delete(index=self.names.meta, id=f"gen-{gen}", refresh="true")

    def _max_generation(self) -> int:
        ids = [
            g for i in self._indices(self.names.recs_pattern) if (g := self.names.generation_of(i))
        ]
        body = {"size": 1, "sort": [{"id": "desc"}], "_source": ["id"]}
        hits = self._search(self.names.meta, body)["hits"]["hits"]
        ids += [int(h["_source"]["id"]) for h in hits]
        return max(ids, default=0)

    def _meta(self, deleted: bool = False) -> list[dict[str, Any]]:
        body = {
            "size": 10_000,
            "query": {"term": {"deleted": deleted}},
            "sort": [{"id": "asc"}],
        }
        return [h["_source"] for h in self._search(self.names.meta, body)["hits"]["hits"]]

    def _active_indices(self) -> list[str]:
        try:
            return sorted(as_json(self.client.indices.get_alias(name=self.names.recs_alias)))
        except self._not_found:
            return []

    def _active_index(self) -> str | None:
        active = self._active_indices()
        if len(active) > 1:
            raise StoreError(
                f"alias '{self.names.recs_alias}' must point at one generation index; got "
                f"{active} on {self.url}: activate one generation again to repair it"
            )
        return active[0] if active else None

    def activate_generation(self, generation_id: int) -> None:
        n = self.names
        known = {int(m["id"]) for m in self._meta()}
        index = n.recs_index(generation_id)
        if generation_id not in known or not self.client.indices.exists(index=index):
            raise NotFoundError(f"generation {generation_id} does not exist")
        previous = self._swap_alias(index)
        # Keep the new one, the one it replaces (rollback) and any newer one not yet activated.
        prev_id = n.generation_of(previous) if previous else None
        for m in self._meta():
            g = int(m["id"])
            if g in (generation_id, prev_id) or g > generation_id:
                continue
            with contextlib.suppress(self._not_found):
                self.client.indices.delete(index=n.recs_index(g))
            self.client.update(
                index=n.meta, id=f"gen-{g}", body={"doc": {"deleted": True}}, refresh="true"
            )

    def _swap_alias(self, index: str) -> str | None:
        """Points the alias at `index` in one atomic call; returns the index it left. A remove
        that finds the alias gone (another writer moved it) fails the whole call: read again."""
        n, last = self.names, ""
        for _ in range(SWAP_ATTEMPTS):
            active = self._active_indices()
            previous = active[0] if len(active) == 1 else None  # none, or a broken state
            body = swap_alias_actions(n.recs_alias, index, previous, n.recs_pattern)
            try:
                resp = as_json(self.client.indices.update_aliases(body=body))
            except self._not_found as exc:  # must_exist: the alias moved since we read it
                last = one_line(exc)
                continue
            failed = alias_errors(resp)
            if not failed:
                return previous
            last = "; ".join(failed)
        raise StoreError(
            f"activating {index} must move alias '{n.recs_alias}' in one call; it failed "
            f"{SWAP_ATTEMPTS} times on {self.url}: {last}"
        )

    def generations(self) -> list[Generation]:
        active = self._active_index()
        active_id = self.names.generation_of(active) if active else None
        return [
            Generation(
                id=int(m["id"]),
                model=m["model"],
                created_at=datetime.fromtimestamp(m["created_at_us"] / 1e6, tz=UTC),
                n_users=int(m["n_users"]),
                n_rows=int(m["n_rows"]),
                active=int(m["id"]) == active_id,
            )
            for m in self._meta()
        ]

    def recommendations(self, user_id: str, k: int | None = None) -> pl.DataFrame:
        # One realtime GET through the alias: the document is one generation's, whole.
        try:
            doc = as_json(self.client.get(index=self.names.recs_alias, id=key_id(user_id)))
        except self._not_found:
            return recommendations_frame(None)
        return recommendations_frame(doc["_source"], k)


__all__ = ["SWAP_ATTEMPTS", "GenerationStore"]
