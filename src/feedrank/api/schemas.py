"""Request bodies as JSON Schema for the OpenAPI document (and the fuzzer), and response models.
Event bodies are parsed by the ingestion layer itself, so a batch's bad items get per-item
errors instead of one 422 for the whole request."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

_SCALAR: dict[str, Any] = {"anyOf": [{"type": "string"}, {"type": "number"}]}

EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["user_id", "type"],
    "properties": {
        "event_id": {"type": "string", "description": "idempotence key: stored once"},
        "user_id": {"type": "string"},
        "item_id": {"type": "string", "description": "empty only for login/logout/visit"},
        "type": {
            "type": "string",
            "description": "a configured interaction type",
            "example": "click",
        },
        "timestamp": {**_SCALAR, "description": "ISO 8601 or epoch seconds; default now"},
        "value": {"type": "number"},
        "position": {"type": "integer", "minimum": 0},
        "device": {"type": "string"},
        "context": {"type": "object", "description": "kept as context (precise location dropped)"},
    },
    "additionalProperties": True,
}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI `openapi_extra` declaring a required JSON request body of this schema."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


EVENTS_BODY = _json_body(
    {
        "anyOf": [
            EVENT,
            {"type": "array", "items": EVENT},
            {
                "type": "object",
                "required": ["events"],
                "properties": {"events": {"type": "array", "items": EVENT}},
            },
        ]
    }
)

IMPRESSIONS_BODY = _json_body(
    {
        "type": "object",
        "required": ["user_id", "items"],
        "properties": {
            "user_id": {"type": "string"},
            "items": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "anyOf": [
                        {"type": "string"},
                        {
                            "type": "object",
                            "required": ["item_id"],
                            "properties": {
                                "item_id": {"type": "string"},
                                "position": {"type": "integer", "minimum": 0},
                                "propensity": {
                                    "type": "number",
                                    "exclusiveMinimum": 0,
                                    "maximum": 1,
                                    "description": "the logging policy's "
                                    "probability of showing this item at this "
                                    "position; kept in the event's context",
                                },
                            },
                        },
                    ]
                },
            },
            "timestamp": _SCALAR,
            "device": {"type": "string"},
            "request_id": {"type": "string", "description": "idempotence key"},
            "context": {"type": "object"},
        },
    }
)

ATTRIBUTES_BODY = _json_body(
    {
        "type": "object",
        "additionalProperties": {
            "anyOf": [
                {"type": "string"},
                {"type": "number"},
                {"type": "boolean"},
                {"type": "null"},
            ]
        },
    }
)


class ItemErrorOut(BaseModel):
    index: int
    field: str
    reason: str


class IngestOut(BaseModel):
    received: int
    stored: int = Field(description="new events written")
    duplicates: int = Field(description="events already stored (same event_id)")
    rejected: int
    errors: list[ItemErrorOut]
    notes: list[str] = Field(
        default_factory=list,
        description="stored events of types the settings do not name (weighed by "
        "unknown_type_weight), with the nearest configured type",
    )


class Reason(BaseModel):
    feature: str
    value: Any = None
    contribution: float


class BoostOut(BaseModel):
    factor: float = Field(description="the product of the boosts that matched")
    by: list[str] = Field(description="the boosts that matched (field=value:factor)")


class RuleOut(BaseModel):
    rule: str
    removed: int = Field(description="candidates this rule removed (summed in rule order)")


class RecItem(BaseModel):
    rank: int
    item_id: str
    score: float | None = Field(description="the model's score; none on an explored slate")
    source: str = Field(
        description="model, popular_in_segment or popular_overall (cold start), newest or "
        "catalogue (the last refills), or explore_uniform (a random slate)"
    )
    boost: BoostOut | None = None
    reasons: list[Reason] | None = None
    propensity: float | None = Field(
        None, description="with `explore`: the exact probability of this item at this rank"
    )


class RecommendationsOut(BaseModel):
    user_id: str
    model: str
    generation: int | None = Field(description="the generation served from, if any")
    served_from: str = Field(description="generation (precomputed) or live")
    cold_start: bool
    items: list[RecItem]
    rules: list[RuleOut] = Field(description="each rule applied and what it removed")
    experiment: str | None = Field(None, description="the experiment asked for, if any")
    variant: str | None = Field(
        None, description="the user's variant in it (the model that served)"
    )
    explore: float | None = Field(None, description="the exploration share asked for, if any")
    explored: bool | None = Field(None, description="whether this slate is the random one")


class ErrorOut(BaseModel):
    detail: Any


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "unusable request"},
    401: {"model": ErrorOut, "description": "no valid API key"},
    403: {"model": ErrorOut, "description": "the key lacks the scope"},
    404: {"model": ErrorOut, "description": "unknown user, item or model"},
    413: {"model": ErrorOut, "description": "body too large"},
    422: {"model": ErrorOut, "description": "invalid input"},
    429: {"model": ErrorOut, "description": "an expensive request over its limit (Retry-After)"},
    503: {"model": ErrorOut, "description": "the store cannot serve now (Retry-After)"},
}
