"""Explanations of a GLM's recommendations: the largest feature contributions to each logit, for
every recommended (user, item) pair of 200 users x top-10.

The model is fitted on the demo site and served through a view of the same frames, as of just
after its newest event: `scorer = model.at(FrameView(data, settings))`; the pairs are
`scorer.recommend(users, k=10)` (a user without events is no signal to the model and gets no
list — the service's fallbacks serve them — so 3 of the 200 users give no pairs: 1,970 pairs).

feedrank: `scorer.explain_pairs(users, items)`: one Snapshot of the users' histories (read from
the view once), one point-in-time feature frame for all pairs, one encoding, contributions
summed per raw feature with sparse column slices.

Peer: the same scorer's `explain_pairs([user], [item])` called pair by pair. The old per-pair
`model.explain(user, item)` is gone in the new design (a fitted model never serves directly;
a Scorer explains), so a one-pair `explain_pairs` is its equivalent: what the service did before
batching, and what a caller who loops over the recommendations does; each call reads that
user's history from the view and builds a one-user Snapshot. (No outside library explains a GLM
over feedrank's point-in-time features; shap's LinearExplainer would need the encoded matrix,
which is this very computation.) The two must give the same features with contributions equal
to 1e-12.

    .venv/bin/python bench/bench_explain.py [--small]
"""

from __future__ import annotations

from _common import Row, check, parse_args, print_table, timed

from feedrank.datasets.demo import generate_site
from feedrank.models.glm import GLMRecommender
from feedrank.settings import Settings
from feedrank.views.view import FrameView


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    n_users = 20 if args.small else 200
    site = generate_site(n_users=500 if args.small else 2000, seed=0)
    data, settings = site.site_data(), Settings()
    model = GLMRecommender().fit(data, settings)
    scorer = model.at(FrameView(data, settings))
    recs = scorer.recommend(site.users["user_id"].to_list()[:n_users], k=10)
    users, items = recs["user_id"].to_list(), recs["item_id"].to_list()
    t_ours, ours = timed(lambda: scorer.explain_pairs(users, items))
    t_peer, peer = timed(
        lambda: [scorer.explain_pairs([u], [i])[0] for u, i in zip(users, items, strict=True)]
    )
    same = (
        len(ours) == len(users)
        and all(ours)
        and all(
            [c["feature"] for c in a] == [c["feature"] for c in b]
            and all(
                abs(x["contribution"] - y["contribution"]) < 1e-12
                for x, y in zip(a, b, strict=True)
            )
            for a, b in zip(ours, peer, strict=True)
        )
    )
    check(same, f"{len(users)} explanations equal")
    row = Row(
        "explain top-10 recs",
        f"{n_users} users",
        t_ours,
        "explain_pairs() per pair",
        t_peer,
        len(users),
        "pairs/s",
    )
    print_table("GLM explanations", [row])


if __name__ == "__main__":
    main()
