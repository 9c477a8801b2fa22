"""Erasure in a model dump: the user's id and rows go, nobody else's (an id longer than the
stored ids' width must not be truncated into another user's)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from feedrank.models.matrix import csr_arrays, csr_from, drop_user_rows


def test_drop_user_rows_removes_exactly_the_users_rows() -> None:
    arrays = {
        "users": np.asarray(["u1", "u2", "u3"], dtype=str),
        "f": np.arange(6.0).reshape(3, 2),
        **csr_arrays("m", sp.csr_matrix(np.eye(3))),
    }
    assert drop_user_rows(arrays, {"u1x", "nobody"}, dense=["f"], csr=["m"]) is False
    assert arrays["users"].tolist() == ["u1", "u2", "u3"]
    assert drop_user_rows(arrays, {"u2"}, dense=["f"], csr=["m"]) is True
    assert arrays["users"].tolist() == ["u1", "u3"]
    assert arrays["f"].tolist() == [[0.0, 1.0], [4.0, 5.0]]
    assert csr_from("m", arrays).toarray().tolist() == [[1, 0, 0], [0, 0, 1]]
