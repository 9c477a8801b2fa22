"""PUT /users/{id}, PUT /items/{id}, DELETE /users/{id}."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Request

from feedrank.api.auth import require
from feedrank.api.ingesting import parse_json
from feedrank.api.runtime import Runtime, runtime
from feedrank.api.schemas import ATTRIBUTES_BODY, ERRORS
from feedrank.pipeline.erase import erase_user

router = APIRouter(tags=["users and items"])
USER_ID = Path(min_length=1, max_length=256)
ITEM_ID = Path(min_length=1, max_length=256)


@router.put(
    "/users/{user_id}",
    dependencies=[Depends(require("ingest"))],
    responses=ERRORS,
    openapi_extra=ATTRIBUTES_BODY,
)
async def put_user(
    request: Request, user_id: str = USER_ID, rt: Runtime = Depends(runtime)
) -> dict[str, Any]:
    """Insert or replace a user's attributes. Age is stored as its band; precise location
    (city, coordinates, postal code, IP, ...) is dropped."""
    body = parse_json(await request.body())
    stored = await rt.write(rt.ingesting.user, user_id, body)
    return {"user": stored}


@router.put(
    "/items/{item_id}",
    dependencies=[Depends(require("ingest"))],
    responses=ERRORS,
    openapi_extra=ATTRIBUTES_BODY,
)
async def put_item(
    request: Request, item_id: str = ITEM_ID, rt: Runtime = Depends(runtime)
) -> dict[str, Any]:
    """Insert or replace an item (created_at defaults to now). Every server on the store serves
    it within a second, without reloading."""
    body = parse_json(await request.body())
    stored = await rt.write(rt.ingesting.item, item_id, body)
    return {"item": stored}


@router.delete("/users/{user_id}", dependencies=[Depends(require("admin"))], responses=ERRORS)
async def delete_user(user_id: str = USER_ID, rt: Runtime = Depends(runtime)) -> dict[str, Any]:
    """Erase the user everywhere: events, profile, counters and recommendations in the store
    (bytes zeroed, WAL checkpointed), their rows in model and benchmark files; this server's
    cached answers for them are dropped now, every server's within a second. Says what went."""
    removed = await rt.write(erase_user, rt.store, rt.registry, user_id)
    rt.state.live.drop_user(user_id)
    return {"user_id": user_id, "removed": removed, "in_memory": "dropped"}
