"""Online experiments: deterministic assignment of users to variants, and their reports."""
