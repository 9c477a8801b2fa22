"""Settings that shape the data, not the code: interaction types and weights, what counts as an
engagement, how examples are labelled. Loaded from a TOML file or built in code."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from feedrank.exceptions import ConfigError

DEFAULT_TYPE_WEIGHTS: dict[str, float] = {
    "impression": 0.0,  # what was shown; the negative class when no engagement follows
    "view": 1.0,
    "click": 1.0,
    "like": 2.0,
    "comment": 3.0,
    "share": 4.0,
    "purchase": 5.0,
    "form_submission": 1.0,
    "rating": 1.0,
    # events about a user with no item (seed 001's UserLogin/UserLogout)
    "login": 0.0,
    "logout": 0.0,
    "visit": 0.0,
}

DEFAULT_ENGAGEMENT_TYPES = ("click", "like", "comment", "share", "purchase")
DEFAULT_ITEMLESS_TYPES = ("login", "logout", "visit")
DEFAULT_AGE_BANDS = (18, 25, 35, 45, 55, 65)


@dataclass(frozen=True)
class AttributeWeights:
    """A weight that depends on an item attribute (seed 004 weighs forms by asset type).
    The event's weight is type_weight * values.get(item[attribute], default)."""

    attribute: str
    values: dict[str, float]
    default: float = 1.0


@dataclass(frozen=True)
class Settings:
    type_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TYPE_WEIGHTS))
    engagement_types: tuple[str, ...] = DEFAULT_ENGAGEMENT_TYPES
    itemless_types: tuple[str, ...] = DEFAULT_ITEMLESS_TYPES
    attribute_weights: AttributeWeights | None = None
    # An impression is labelled positive when an engagement follows within this many seconds.
    label_window_seconds: float = 3600.0
    # Without impressions: sampled negatives per positive.
    negative_ratio: int = 4
    age_bands: tuple[int, ...] = DEFAULT_AGE_BANDS
    seed: int = 0
    # Online experiments: name -> {variant: share}; a variant is a registry model name.
    experiments: dict[str, dict[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [t for t in self.engagement_types if t not in self.type_weights]
        if unknown:
            raise ConfigError(
                f"engagement_types must be among the configured types "
                f"{sorted(self.type_weights)}; got {unknown}"
            )
        if self.negative_ratio < 1:
            raise ConfigError(f"negative_ratio must be >= 1; got {self.negative_ratio}")
        if self.label_window_seconds <= 0:
            raise ConfigError(f"label_window_seconds must be > 0; got {self.label_window_seconds}")

    @property
    def types(self) -> list[str]:
        return sorted(self.type_weights)

    def with_types(self, extra: dict[str, float]) -> Settings:
        return replace(self, type_weights={**self.type_weights, **extra})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_file(cls, path: str | Path) -> Settings:
        """Read a TOML file: top-level keys are the field names of Settings."""
        try:
            data: dict[str, Any] = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read settings file {path}: {exc}") from exc
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "settings") -> Settings:
        data = dict(data)
        allowed = {f.name for f in fields(cls)}
        bad = sorted(set(data) - allowed)
        if bad:
            raise ConfigError(
                f"settings keys must be among {sorted(allowed)}; got {bad} ({source})"
            )
        if "type_weights" in data:
            data["type_weights"] = {**DEFAULT_TYPE_WEIGHTS, **data["type_weights"]}
        for key in ("engagement_types", "itemless_types", "age_bands"):
            if key in data:
                data[key] = tuple(data[key])
        if data.get("attribute_weights"):
            data["attribute_weights"] = AttributeWeights(**data["attribute_weights"])
        return cls(**data)
