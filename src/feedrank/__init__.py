"""feedrank: a personalization engine — events in, point-in-time features, engagement models,
recommendations out."""

__version__ = "0.1.0"
