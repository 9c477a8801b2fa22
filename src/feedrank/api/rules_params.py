"""The rules of a request as HTTP takes them: query parameters on GET, a JSON body on POST,
with the names and meaning of the CLI's options (serving.rules)."""

from __future__ import annotations

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field

from feedrank.serving.rules import Rules

FILTER_HELP = (
    "field=value (repeat: values of one field are OR-ed, fields AND-ed; a list attribute "
    "matches when it contains the value), ranges on numbers and times (price<50, "
    "created_at>=2026-01-01), relative age (age<30d)"
)


def rules_query(
    filter: list[str] = Query([], description=FILTER_HELP),
    exclude: list[str] = Query([], description="item ids never to return (comma-separated)"),
    include: list[str] | None = Query(None, description="only these item ids (comma-separated)"),
    boost: list[str] = Query([], description="field=value:factor multiplies matching scores"),
    max_per: list[str] = Query([], description="field=n: at most n items per value"),
    offset: int = Query(0, ge=0, le=10_000, description="skip this many (pages)"),
) -> Rules:
    return Rules.parse(filter, exclude, include, boost, max_per, offset)


class RulesBody(BaseModel):
    """The same rules in a JSON body (POST requests)."""

    model_config = ConfigDict(extra="forbid")

    filter: list[str] = Field(default_factory=list, description=FILTER_HELP)
    exclude: list[str] = Field(default_factory=list)
    include: list[str] | None = None
    boost: list[str] = Field(default_factory=list)
    max_per: list[str] = Field(default_factory=list)
    offset: int = Field(0, ge=0, le=10_000)
    exclude_seen: bool = True

    def rules(self) -> Rules:
        return Rules.parse(
            self.filter,
            self.exclude,
            self.include,
            self.boost,
            self.max_per,
            self.offset,
            self.exclude_seen,
        )
