"""Explanations of a GLM's recommendations: the largest feature contributions to each logit, for
every recommended (user, item) pair of 200 users x top-10.

feedrank: `GLMRecommender.explain_pairs(users, items)`: one point-in-time feature frame for all
pairs, one encoding, contributions summed per raw feature with sparse column slices.

Peer: the same model's `explain(user, item)` called pair by pair — what the service did before
`explain_pairs`, and what a caller who loops over the recommendations does. (No outside library
explains a GLM over feedrank's point-in-time features; shap's LinearExplainer would need the
encoded matrix, which is this very computation.) The two must give the same features with
contributions equal to 1e-12.

    .venv/bin/python bench/bench_explain.py [--small]
"""

from __future__ import annotations

from _common import Row, check, parse_args, print_table, timed

from feedrank.datasets.demo import generate_site
from feedrank.models.glm import GLMRecommender
from feedrank.settings import Settings


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    n_users = 20 if args.small else 200
    site = generate_site(n_users=500 if args.small else 2000, seed=0)
    model = GLMRecommender().fit(site.site_data(), Settings())
    recs = model.recommend(site.users["user_id"].to_list()[:n_users], k=10)
    users, items = recs["user_id"].to_list(), recs["item_id"].to_list()
    t_ours, ours = timed(lambda: model.explain_pairs(users, items))
    t_peer, peer = timed(lambda: [model.explain(u, i) for u, i in zip(users, items, strict=True)])
    same = all(
        [c["feature"] for c in a] == [c["feature"] for c in b]
        and all(
            abs(x["contribution"] - y["contribution"]) < 1e-12 for x, y in zip(a, b, strict=True)
        )
        for a, b in zip(ours, peer, strict=True)
    )
    check(same, f"{len(users)} explanations equal")
    row = Row(
        "explain top-10 recs",
        f"{n_users} users",
        t_ours,
        "explain() per pair",
        t_peer,
        len(users),
        "pairs/s",
    )
    print_table("GLM explanations", [row])


if __name__ == "__main__":
    main()
