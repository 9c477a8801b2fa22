"""Serving: a fitted model's scorer over a view, with fallbacks where it has no signal."""
