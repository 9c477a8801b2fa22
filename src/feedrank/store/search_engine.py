"""Ranking inside Elasticsearch/OpenSearch, mixed into SearchStore: the GLM evaluated by the
stored painless script over candidates (with the user's params built from their own documents),
the per-item features it reads, and similar items by kNN. Precomputed top-K is the store's
`recommendations` (one GET through the generation alias)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import polars as pl

from feedrank.data.site import SiteData
from feedrank.exceptions import NotFoundError
from feedrank.store.search_connect import BulkWriteError, as_json
from feedrank.store.search_frames import ITEM_SOURCE, items_frame, us, users_frame, with_attrs
from feedrank.store.search_layout import EMBEDDING, Flavor, Names
from feedrank.store.search_queries import (
    MAX_TERMS,
    glm_search_body,
    item_feature_actions,
    key_id,
    usable_vector,
)
from feedrank.store.search_ranking import GLMSplit


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

        def _attrs(self, index: str) -> dict[str, pl.DataType]: ...

        def _item_vector(self, item_id: str) -> list[float] | None: ...

        def _similar_body(self, vector: Sequence[float], k: int) -> dict[str, Any]: ...

        def events(
            self,
            start: datetime | None = None,
            end: datetime | None = None,
            user_ids: Sequence[str] | None = None,
            types: Sequence[str] | None = None,
        ) -> pl.DataFrame: ...

    def user_site(self, user_id: str) -> SiteData:
        """What the GLM needs to compute one user's script params: the profile, the user's
        events (one routed query) and the attributes of the items they touched."""
        events = self.events(user_ids=[user_id])
        touched = events.filter(pl.col("item_id") != "")["item_id"].unique().to_list()
        rows: list[dict[str, Any]] = []
        for i in range(0, len(touched), MAX_TERMS):
            q = {"terms": {"item_id": touched[i : i + MAX_TERMS]}}
            rows.extend(self._scan(self.names.items, q, ITEM_SOURCE))
        # Every known attribute as a column, even when no touched item or no profile has it.
        items = items_frame(rows, self._attrs(self.names.items))
        user_attrs = self._attrs(self.names.users)
        try:
            doc = as_json(self.client.get(index=self.names.users, id=key_id(user_id)))["_source"]
            users = users_frame([doc], user_attrs)
        except self._not_found:
            users = with_attrs(pl.DataFrame({"user_id": [user_id]}), user_attrs)
        return SiteData(users, items, events)

    def publish_item_features(self, split: GLMSplit) -> int:
        """Write the model's per-item numeric features (f.*) as of its serving time."""
        fields = split.item_fields()
        try:
            written, _ = self._bulk(
                item_feature_actions(fields, self.names, us(split.at)),
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
        split: GLMSplit,
        user_id: str,
        k: int = 10,
        max_age_days: float | None = None,
        window: int = 2_000,
        prefilter_field: str | None = None,
        params: dict[str, Any] | None = None,
        from_store: bool = True,
        at: datetime | None = None,
    ) -> pl.DataFrame:
        """Top-k by the GLM evaluated in the engine (stored script in a rescore window).

        The user's params come from this store's current documents (`from_store`: profile,
        events, touched items) or from the data the model serves, as of `at` (the request
        time; default the model's serving time: pass now to count the newest engagement).
        The item side is what publish_item_features wrote."""
        data = self.user_site(user_id) if from_store else None
        if params is None:
            params = split.user_params(user_id, data=data, at=at)
        body = glm_search_body(
            self.names.glm_script,
            params,
            params["now_us"],
            k,
            split.seen_items(user_id, data=data, at=at),
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
