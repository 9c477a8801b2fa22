"""The HTTP service's settings, read once at start-up (environment, then CLI flags) and handed to
routes as a dependency. Data settings (types, weights) are stored with the data
(feedrank.settings.Settings; GET/PUT /settings)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from feedrank.exceptions import ConfigError
from feedrank.pii import PiiPolicy


@dataclass(frozen=True)
class ApiSettings:
    store_url: str = "sqlite:///./feedrank.db"
    models_dir: str | None = None
    model: str | None = None  # registry name served by default (None: the champion, else newest)
    keys_spec: str | None = None  # "k1=read,ingest;k2=admin"
    keys_file: Path | None = None
    insecure: bool = False
    max_body_bytes: int = 2 * 1024 * 1024
    max_batch: int = 10_000
    # explain / similar requests running at once (more: 429). One: each costs tens of ms of
    # CPU and holds the GIL in part, and plain recommendations need the rest of the machine.
    max_expensive: int = 1
    reload_seconds: float = 0.5  # how often the store's changes are applied
    models_seconds: float = 5.0  # how often the registry is looked at for a new champion
    # users (the newest active) whose model terms are computed at start-up, so that their
    # first live request (a boost, a re-rank) only gathers; memory grows with them (~1 kB)
    warm_users: int = 0
    pii: PiiPolicy = field(default_factory=PiiPolicy)

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1024:
            raise ConfigError(f"max_body_bytes must be >= 1024; got {self.max_body_bytes}")
        if self.max_expensive < 1:
            raise ConfigError(f"max_expensive must be >= 1; got {self.max_expensive}")
        if self.warm_users < 0:
            raise ConfigError(f"warm_users must be >= 0; got {self.warm_users}")
        if self.reload_seconds <= 0:
            raise ConfigError(f"reload_seconds must be > 0; got {self.reload_seconds}")

    @classmethod
    def from_env(cls, **overrides: object) -> ApiSettings:
        """FEEDRANK_STORE, FEEDRANK_MODELS, FEEDRANK_MODEL, FEEDRANK_API_KEYS,
        FEEDRANK_API_KEYS_FILE, FEEDRANK_MAX_BODY_BYTES, FEEDRANK_RELOAD_SECONDS,
        FEEDRANK_MAX_EXPENSIVE, FEEDRANK_WARM_USERS,
        FEEDRANK_PII_DROP (comma-separated keys), FEEDRANK_PII_AGE_BANDS (0/1); explicit
        overrides (CLI flags) win where not None."""
        env = os.environ
        values: dict[str, object] = {}
        if env.get("FEEDRANK_STORE"):
            values["store_url"] = env["FEEDRANK_STORE"]
        if env.get("FEEDRANK_MODELS"):
            values["models_dir"] = env["FEEDRANK_MODELS"]
        if env.get("FEEDRANK_MODEL"):
            values["model"] = env["FEEDRANK_MODEL"]
        if env.get("FEEDRANK_API_KEYS"):
            values["keys_spec"] = env["FEEDRANK_API_KEYS"]
        if env.get("FEEDRANK_API_KEYS_FILE"):
            values["keys_file"] = Path(env["FEEDRANK_API_KEYS_FILE"])
        for name, key in (
            ("max_body_bytes", "FEEDRANK_MAX_BODY_BYTES"),
            ("reload_seconds", "FEEDRANK_RELOAD_SECONDS"),
            ("max_expensive", "FEEDRANK_MAX_EXPENSIVE"),
            ("warm_users", "FEEDRANK_WARM_USERS"),
        ):
            if env.get(key):
                try:
                    values[name] = float(env[key]) if name == "reload_seconds" else int(env[key])
                except ValueError as exc:
                    raise ConfigError(f"{key} must be a number; got '{env[key]}'") from exc
        values["pii"] = PiiPolicy.from_env()
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
