"""The Python side of a real-time GLM request in Elasticsearch/OpenSearch, beside feedrank's
own Python ranking, on a synthetic site.

feedrank (engine path): for each user, GLMExport(glm.at(view)).user_params(user) -- the script
params a search backend gets as plain data before its one search, from the user's own history
read through the view -- plus search_ranking.evaluate over the catalogue (the NumPy twin of the
painless script; in production the engine runs that part).

Peer: glm.at(view).score([user], catalogue) -- the factorised Python scorer, one user per
request, over the same view.

Check: both give the same probabilities (to 1e-9). The server side (the search itself) is not
measured here: no engine runs on this machine.

    .venv/bin/python bench/bench_search_params.py [--small]
"""

from __future__ import annotations

import numpy as np
from _common import Row, check, parse_args, print_table, timed

from feedrank.datasets.demo import generate_site
from feedrank.models.glm import GLMRecommender
from feedrank.models.glm_export import GLMExport
from feedrank.schema import validate_events, validate_items, validate_users
from feedrank.settings import Settings
from feedrank.store.search_ranking import evaluate
from feedrank.views.site import SiteData
from feedrank.views.view import FrameView


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    n_users, n_items, days, n_requests = (300, 120, 12, 20) if args.small else (2000, 400, 28, 100)
    site = generate_site(n_users=n_users, n_items=n_items, days=days, seed=1)
    settings = Settings()
    data = SiteData(
        validate_users(site.users).good,
        validate_items(site.items).good,
        validate_events(site.events, settings).good.sort("timestamp"),
    )
    model = GLMRecommender().fit(data, settings)
    scorer = model.at(FrameView(data, settings))
    export = GLMExport(scorer)
    fields = export.item_fields()
    items = fields["item_id"].to_numpy()
    users = data.users["user_id"].to_list()[:: max(1, n_users // n_requests)][:n_requests]

    def engine_path() -> np.ndarray:
        return np.vstack([evaluate(export.user_params(u), fields) for u in users])

    def python_path() -> np.ndarray:
        return np.vstack([scorer.score([u], items) for u in users])

    t_engine, p_engine = timed(engine_path, warmup=True)
    t_python, p_python = timed(python_path, warmup=True)
    diff = float(np.abs(p_engine - p_python).max())
    check(diff < 1e-9, f"same probabilities (max |diff| = {diff:.1e})")
    size = f"{n_users} users x {len(items)} items, {data.events.height} events"
    print_table(
        "GLM per request: script params from the user's own documents vs Python scoring",
        [
            Row(
                "params + twin",
                size,
                t_engine,
                "GLM scorer .score",
                t_python,
                len(users),
                "requests/s",
            )
        ],
    )
    print(f"params per request: {t_engine / len(users) * 1e3:.1f} ms (incl. the NumPy twin)")


if __name__ == "__main__":
    main()
