"""SASRec's known answers: a Markov chain's successor recovered; the NumPy serving pass equals
torch's; early stopping keeps the best validation epoch; bad parameters name themselves."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from feedrank.datasets.sequences import item_id, sequential_site
from feedrank.exceptions import ConfigError
from feedrank.models.sasrec import SASRecRecommender, _arrays, _Net, forward
from feedrank.settings import Settings
from feedrank.views.view import FrameView

torch = pytest.importorskip("torch")
EVERY_RATING = Settings(rating_threshold=1.0)


def test_the_numpy_forward_pass_is_torchs() -> None:
    torch.manual_seed(0)
    net = _Net(torch, n_items=12, d=8, L=6, n_blocks=2, dropout=0.3).eval()
    seq = np.array([[0, 0, 3, 5, 1, 12], [0, 0, 0, 0, 0, 7], [2, 4, 6, 8, 10, 11]])
    with torch.no_grad():
        want = net(torch.from_numpy(seq))[:, -1].numpy()
    got = forward(_arrays(net.state_dict(), 2), seq, 2)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # Trimming shared left padding changes nothing (positions count from the newest item).
    np.testing.assert_allclose(
        forward(_arrays(net.state_dict(), 2), seq[1:2, 3:], 2), got[1:2], rtol=1e-4, atol=1e-5
    )


def test_a_user_is_sent_to_the_successor_of_their_last_item() -> None:
    site = sequential_site(n_users=400, n_items=20, length=8, follow=0.9, seed=4)
    model = SASRecRecommender(max_len=8, dim=32, n_blocks=1, dropout=0.1, epochs=40, seed=1)
    model.fit(site.data, EVERY_RATING)
    assert len(model.validation_) <= 40
    assert model.epochs_ == int(np.argmax(model.validation_)) + 1  # the best epoch is kept
    sc = model.at(FrameView(site.data, EVERY_RATING))
    users = site.data.users["user_id"].to_list()
    last = site.data.events.group_by("user_id").agg(pl.col("item_id").last())
    truth = dict(
        zip(
            last["user_id"],
            item_id(site.successor[[int(i[1:]) for i in last["item_id"]]]),
            strict=True,
        )
    )
    top = sc.recommend(users, k=1, exclude_seen=False)
    hits = [truth[u] == i for u, i in top.select("user_id", "item_id").iter_rows()]
    assert np.mean(hits) >= 0.8, np.mean(hits)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"max_len": 0}, "max_len must be an integer >= 1; got 0"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\); got 1.0"),
        ({"learning_rate": 0}, "learning_rate must be > 0; got 0"),
    ],
)
def test_bad_parameters_name_themselves(params: dict[str, float], message: str) -> None:
    data = sequential_site(n_users=10, n_items=5, length=3).data
    with pytest.raises(ConfigError, match=message):
        SASRecRecommender(**params).fit(data, EVERY_RATING)  # type: ignore[arg-type]
