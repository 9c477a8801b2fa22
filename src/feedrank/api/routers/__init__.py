"""Thin routers: parse, check the scope, call the service layer, shape the response. What they
need comes in as dependencies (feedrank.api.runtime)."""
