"""Ranking inside Elasticsearch/OpenSearch, mixed into SearchStore: the GLM evaluated by the
stored painless script over candidates, the per-item features it reads, and similar items by
kNN. What the script needs comes as plain data — a model's exported params and item fields
(feedrank.models.glm_export) — so the store imports no model. Precomputed top-K is the store's
`recommendations` (one GET through the generation alias)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import polars as pl

from feedrank.exceptions import NotFoundError
from feedrank.store.search_connect import BulkWriteError
from feedrank.store.search_layout import EMBEDDING, Flavor, Names
from feedrank.store.search_queries import glm_search_body, item_feature_actions, usable_vector


class EngineRanking:
    """Needs the store's client, names and helpers (declared here for the type checker)."""

    if TYPE_CHECKING:
        client: Any
        names: Names
        flavor: Flavor
        _not_found: type[Exception]

        def _search(self, index: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]: ...

        def _scan(
            self, index: str, query: dict[str, Any], fields: list[str] | None, **kw: Any
        ) -> Iterator[dict[str, Any]]: ...

        def _bulk(
            self, actions: Iterable[dict[str, Any]], ids: Sequence[str], what: str
        ) -> tuple[int, int]: ...

        def _refresh(self, index: str) -> None: ...

        def _item_vector(self, item_id: str) -> list[float] | None: ...

        def _similar_body(self, vector: Sequence[float], k: int) -> dict[str, Any]: ...

    def publish_item_features(self, fields: pl.DataFrame, at_us: int) -> int:
        """Write a model's per-item numeric features (f.*), computed at `at_us`: the item fields
        of a GLM export."""
        try:
            written, _ = self._bulk(
                item_feature_actions(fields, self.names, at_us),
                fields["item_id"].to_list(),
                "item features",
            )
        except BulkWriteError as exc:  # items not stored here: skipped, the rest written
            if any("document_missing" not in e.message for e in exc.errors):
                raise
            written = exc.written
        self._refresh(self.names.items)
        return written

    def glm_recommend(
        self,
        params: dict[str, Any],
        user_id: str,
        exclude: list[str],
        k: int = 10,
        max_age_days: float | None = None,
        window: int = 2_000,
        prefilter_field: str | None = None,
    ) -> pl.DataFrame:
        """Top-k by the GLM evaluated in the engine (stored script in a rescore window), from a
        user's exported script params; `exclude`: items the user already knows."""
        body = glm_search_body(
            self.names.glm_script,
            params,
            params["now_us"],
            k,
            exclude,
            max_age_days,
            window,
            prefilter_field,
        )
        hits = self._search(self.names.items, body)["hits"]["hits"]
        got = pl.DataFrame(
            {
                "item_id": [h["_source"]["item_id"] for h in hits],
                "score": [float(h["fields"]["p"][0]) for h in hits],
            },
            schema={"item_id": pl.String, "score": pl.Float64},
        )
        top = got.sort(["score", "item_id"], descending=[True, False]).head(k)
        return top.select(
            pl.lit(user_id).alias("user_id"),
            pl.int_range(1, top.height + 1, dtype=pl.Int32).alias("rank"),
            "item_id",
            "score",
            pl.lit("glm_engine").alias("source"),
        )

    def similar_items(self, item_id: str, k: int = 10) -> pl.DataFrame:
        """Nearest items by cosine similarity of their embeddings (kNN in the engine, or an
        exact cosine where the server has no kNN: SearchStore.vector_search)."""
        vector = self._item_vector(item_id)
        if not usable_vector(vector):
            raise NotFoundError(f"item '{item_id}' has no '{EMBEDDING}' to search by")
        hits = self._search(self.names.items, self._similar_body(vector, k))["hits"]["hits"]
        rows = [(h["_source"]["item_id"], 2.0 * h["_score"] - 1.0) for h in hits]
        out = pl.DataFrame(rows, schema={"item_id": pl.String, "score": pl.Float64}, orient="row")
        return out.filter(pl.col("item_id") != item_id).head(k)


__all__ = ["EngineRanking"]
