"""The HTTP service (needs the `api` extra: pip install 'feedrank[api]')."""

from feedrank.api.app import create_app

__all__ = ["create_app"]
