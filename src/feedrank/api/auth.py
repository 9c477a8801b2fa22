"""API keys with scopes, sent as an X-API-Key header. Keys are kept only as SHA-256 digests and
compared in constant time, so neither memory dumps of the key table nor logs carry them."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from fastapi import HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader

from feedrank.exceptions import ConfigError

SCOPES = ("read", "ingest", "admin")  # admin implies the others
HEADER = "X-API-Key"
API_KEY = APIKeyHeader(name=HEADER, auto_error=False, description="API key with scopes")


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


@dataclass(frozen=True)
class KeyRing:
    """Digest of each key -> its scopes. Empty with `insecure` means every request is allowed."""

    keys: dict[bytes, frozenset[str]]
    insecure: bool = False

    @classmethod
    def parse(cls, spec: str, source: str = "FEEDRANK_API_KEYS") -> dict[bytes, frozenset[str]]:
        """'k1=read,ingest;k2=admin' (entries split by ';' or newlines, '#' starts a comment)."""
        out: dict[bytes, frozenset[str]] = {}
        entries = [e.split("#", 1)[0].strip() for e in spec.replace("\n", ";").split(";")]
        for n, entry in enumerate((e for e in entries if e), start=1):
            key, sep, scopes = entry.partition("=")
            key = key.strip()
            wanted = frozenset(s.strip() for s in scopes.split(",") if s.strip())
            # The key itself is never quoted in an error: only its position.
            if not sep or not key or not wanted:
                raise ConfigError(
                    f"API key entry {n} of {source} must look like key=scope[,scope]; "
                    "got an entry without a key or scopes"
                )
            bad = sorted(wanted - set(SCOPES))
            if bad:
                raise ConfigError(
                    f"API key entry {n} of {source}: scopes must be among {list(SCOPES)}; got {bad}"
                )
            out[_digest(key)] = wanted
        return out

    @classmethod
    def load(cls, spec: str | None, file: Path | None, insecure: bool) -> KeyRing:
        keys: dict[bytes, frozenset[str]] = {}
        if file is not None:
            try:
                text = file.read_text()
            except OSError as exc:
                raise ConfigError(f"cannot read API keys file {file}: {exc}") from exc
            keys.update(cls.parse(text, str(file)))
        if spec:
            keys.update(cls.parse(spec))
        if not keys and not insecure:
            raise ConfigError(
                "no API keys configured: set FEEDRANK_API_KEYS (e.g. 'k1=read,ingest;k2=admin') "
                "or --keys FILE, or start with --insecure to serve without authentication"
            )
        return cls(keys, insecure)

    def scopes_of(self, key: str | None) -> frozenset[str] | None:
        if key is None:
            return None
        d = _digest(key)
        found = None
        for digest, scopes in self.keys.items():  # constant time per comparison
            if hmac.compare_digest(digest, d):
                found = scopes
        return found


def require(scope: str) -> Callable[..., Awaitable[None]]:
    """A route dependency: 401 without a known key, 403 when the key lacks `scope`."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}; got {scope!r}")

    async def check(request: Request, key: str | None = Security(API_KEY)) -> None:
        # async: a dependency this cheap should not cost a thread-pool hop
        ring: KeyRing = request.app.state.keyring
        if ring.insecure and not ring.keys:
            return
        scopes = ring.scopes_of(key)
        if scopes is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                f"a valid API key is required in the {HEADER} header",
                headers={"WWW-Authenticate": "ApiKey"},
            )
        if scope not in scopes and "admin" not in scopes:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"this API key lacks the '{scope}' scope; it has {sorted(scopes)}",
            )

    check.__name__ = f"require_{scope}"
    return check
