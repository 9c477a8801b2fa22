"""Point-in-time features: history tables (history.py), feature groups (groups.py), the encoder
that turns them into a design matrix (encoder.py), and training examples (examples.py)."""
