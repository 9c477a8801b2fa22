"""The small exception hierarchy. The CLI and the HTTP API translate these once, at the edge."""

from __future__ import annotations

from dataclasses import dataclass


class FeedrankError(Exception):
    """Base class of every error feedrank raises on purpose."""


class ConfigError(FeedrankError):
    """A setting is missing or out of its allowed values."""


class MissingExtraError(FeedrankError):
    """An optional dependency is not installed; the message names the extra to install."""


class StoreError(FeedrankError):
    """The store could not do what was asked (bad URL, unreachable, corrupt)."""


class NotFoundError(FeedrankError):
    """A user, item, model or generation that was asked for does not exist."""


class NotFittedError(FeedrankError):
    """A model was used before `fit` or `load`."""


@dataclass(frozen=True)
class RowError:
    """One bad input row: where it is, which field, and why."""

    line: int | None
    field: str
    message: str
    source: str | None = None

    def __str__(self) -> str:
        where = []
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.source:
            where.append(f"of {self.source}")
        return f"{self.message} ({' '.join(where)})" if where else self.message

    def located(self) -> str:
        """`FILE:LINE: field: message`, the CLI's one line per error (parts left out when
        unknown)."""
        where = ":".join(str(p) for p in (self.source, self.line) if p is not None)
        return (
            f"{where}: {self.field}: {self.message}" if where else f"{self.field}: {self.message}"
        )


class ValidationError(FeedrankError):
    """Input rows broke the schema. Carries every row error, not just the first."""

    def __init__(self, errors: list[RowError], total_bad: int | None = None) -> None:
        self.errors = errors
        self.total_bad = total_bad if total_bad is not None else len(errors)
        shown = "; ".join(str(e) for e in errors[:5])
        more = f" (and {self.total_bad - 5} more)" if self.total_bad > 5 else ""
        super().__init__(f"{self.total_bad} bad row(s): {shown}{more}")


class ParameterError(FeedrankError):
    """A request parameter (a rule, a model name, a session) is malformed or names what does
    not exist: the CLI exits 2, HTTP answers 422, both naming `param`."""

    def __init__(self, param: str, message: str) -> None:
        self.param = param
        super().__init__(message)
