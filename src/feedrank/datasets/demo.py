"""A synthetic website with a known truth, for the `feedrank demo` command, tests and benchmarks.

`generate_site()` simulates a developer-content site: users (age, gender, country), items
(articles, videos, images, podcasts about five programming languages, by a few dozen authors) and
sessions. Each session is a `login`, one slate of `slate_size` impressions, the clicks and
follow-up engagements they drew, and a `logout`. Everything is vectorised NumPy/Polars and
deterministic given the seed.

The true click model
--------------------
Impression *i* (user *u*, item *j*, slate position *pos*, shown at time *t*) is clicked with
probability ``sigmoid(z)``::

    z = intercept                                   -3.1
      + gender_content[gender(u), content_type(j)]  table A
      + ageband_lang[age_band(u), lang(j)]          table B
      + taste_coef * taste[u, content_type(j)]      taste_coef = 3.0
      + position_effect[pos]                        -log2(pos) / 3  (0 at 1, -1.0 at 8)
      + freshness_coef * log1p(item age in days)    freshness_coef = -0.3
      + author_quality[author(j)]                   ~ N(0, 0.4), drawn per seed
      + user_author[u, author(j)]                   0 unless author_affinity > 0 (below)

Table A, ``gender_content`` (the reference cell female/article is 0)::

                 article  video  image  podcast
    female          0.0    -0.2    0.5     0.1
    male            0.1     0.4   -0.3     0.0
    nonbinary       0.2     0.0    0.3     0.6

Table B, ``ageband_lang`` (cells not shown are 0; the reference cell <18/python is 0)::

             python  java  javascript   go   rust
    <18         0     0       0.6      -0.3    0
    18-24       0     0       0.5       0     0.4
    25-34      0.3    0        0       0.4    0.3
    35-44       0    0.3       0       0.2     0
    45-54       0    0.6     -0.3       0      0
    55-64       0    0.8       0        0    -0.5
    65+        0.4   0.5     -0.4       0    -0.8

Because both reference cells are 0, a logistic GLM given these terms, with one-hot
(gender x content type) and (age band x lang) cells and those two cells dropped, recovers the
numbers as they are (defaults, seed 0: taste 2.98, freshness -0.296, position 8 -1.00, every
cell within 0.3, the sparse ones being the least exact).

With ``author_affinity`` = s > 0 users and authors get latent vectors (``affinity_dim`` = d
standard normal coordinates each, drawn from a generator of their own, seeded by (seed, 1), so
the rest of the site is the same draw) and ``user_author[u, a] = s * (U_u . A_a) / sqrt(d)``:
a user-by-author affinity of standard deviation s that no user or item column carries (kept
in ``DemoTruth.user_author``). With s = 0 (the default) the term is absent.

``taste[u]`` is the user's latent share of interest per content type, drawn as
``Dirichlet(4 * BASE_PREF[gender])``; it is not a column of `users` (a model must infer it from
behaviour) but is kept in ``DemoTruth.user_taste``. A model that ignores taste sees the marginal
gender effect ``gender_content + taste_coef * BASE_PREF[gender]``. Age bands are
``"<18","18-24","25-34","35-44","45-54","55-64","65+"``. Country, device, title topic and time of
day carry no click signal.

How the rest is simulated
-------------------------
- Users: age 16..75 (band shares `_BAND_P`, uniform within a band), gender female/male/nonbinary
  (48/48/4 %), country US/IN/BR/GB/DE (38/25/15/12/10 %), a preferred device, and an activity
  rate: lognormal (sigma 0.8) with mean `sessions_per_day`.
- Items: created uniformly over [start - 14 days, end) (at least `slate_size` before `start`),
  ids in creation order; content type, lang and a Zipf-weighted author; a templated title.
- Sessions: Poisson per user and day (rate x weekday profile), start hour from an evening-heavy
  profile (UTC). A user's sessions start at least 40 minutes apart and every session ends before
  `end`. The device is the preferred one 85 % of the time.
- Slate (the logging policy, `logging_policy`): `slate_size` distinct items created before the
  session, drawn without replacement; positions are a random permutation (so position is
  independent of the item). ``"recency"`` (default) draws with weights 0.3 uniform + 0.7 recency
  (exp(-age / 3 days)); ``"uniform"`` draws uniformly, so P(item j at position p) = 1 / n for
  the n items then in the catalogue, and each impression carries that exact propensity as
  context ``{"propensity": 1/n}`` (for off-policy estimates). `DemoSite.click_probability`
  gives the true click probability of any other policy's hypothetical impressions.
- Timing: login at t, impressions at t + 1 s, a click 2 s..~10 min after its impression, `like`
  (p 0.3), `comment` (0.05), `share` (0.03) each 3 s..~20 min after the click (all within 30
  minutes of the impression), `logout` 10 s..5 min after the session's last event.

Size: about ``n_users * days * sessions_per_day * (slate_size + 2.1)`` events; the defaults give
~340k events (~32k sessions, CTR ~6 %); ``n_users=6_000`` gives ~1M.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
from numpy.typing import NDArray

from feedrank.datasets.demo_truth import AGE_BAND_BREAKS as AGE_BAND_BREAKS
from feedrank.datasets.demo_truth import AGE_BANDS, DemoTruth, click_probability, impression_truth
from feedrank.datasets.demo_truth import age_band as age_band
from feedrank.exceptions import ConfigError
from feedrank.schema import EVENT_COLUMNS
from feedrank.views.site import SiteData


def _frozen(values: list[Any]) -> NDArray[np.float64]:
    a = np.array(values, dtype=np.float64)
    a.setflags(write=False)
    return a


GENDERS = ("female", "male", "nonbinary")
COUNTRIES = ("US", "GB", "DE", "IN", "BR")
CONTENT_TYPES = ("article", "video", "image", "podcast")
LANGS = ("python", "java", "javascript", "go", "rust")
DEVICES = ("mobile", "desktop", "tablet")
EVENT_TYPES = ("login", "impression", "click", "like", "comment", "share", "logout")

# --- the truth (see the module docstring) --------------------------------------------------------
INTERCEPT = -3.1
TASTE_COEF = 3.0
FRESHNESS_COEF = -0.3
AUTHOR_QUALITY_SD = 0.4
GENDER_CONTENT = _frozen(
    [
        [0.0, -0.2, 0.5, 0.1],  # female
        [0.1, 0.4, -0.3, 0.0],  # male
        [0.2, 0.0, 0.3, 0.6],  # nonbinary
    ]
)
AGEBAND_LANG = _frozen(
    # python java  javascript go   rust
    [
        [0.0, 0.0, 0.6, -0.3, 0.0],  # <18
        [0.0, 0.0, 0.5, 0.0, 0.4],  # 18-24
        [0.3, 0.0, 0.0, 0.4, 0.3],  # 25-34
        [0.0, 0.3, 0.0, 0.2, 0.0],  # 35-44
        [0.0, 0.6, -0.3, 0.0, 0.0],  # 45-54
        [0.0, 0.8, 0.0, 0.0, -0.5],  # 55-64
        [0.4, 0.5, -0.4, 0.0, -0.8],  # 65+
    ]
)
BASE_PREF = _frozen(
    # article video image podcast
    [
        [0.30, 0.25, 0.30, 0.15],  # female
        [0.30, 0.35, 0.15, 0.20],  # male
        [0.25, 0.25, 0.25, 0.25],  # nonbinary
    ]
)
TASTE_CONCENTRATION = 4.0
FOLLOW_UP_P = {"like": 0.30, "comment": 0.05, "share": 0.03}

# --- the rest of the simulation ------------------------------------------------------------------
_GENDER_P = (0.48, 0.48, 0.04)
_COUNTRY_P = (0.38, 0.12, 0.10, 0.25, 0.15)
_BAND_P = (0.05, 0.18, 0.28, 0.21, 0.14, 0.09, 0.05)
_BAND_AGES = ((16, 17), (18, 24), (25, 34), (35, 44), (45, 54), (55, 64), (65, 75))
_CONTENT_P = (0.40, 0.30, 0.20, 0.10)
_LANG_P = (0.30, 0.20, 0.25, 0.15, 0.10)
_DEVICE_P = (0.55, 0.35, 0.10)
_PREFERRED_DEVICE_P = 0.85
_ACTIVITY_SIGMA = 0.8
# fmt: off
_HOUR_PROFILE = _frozen([1.0, 0.6, 0.4, 0.3, 0.3, 0.5, 1.0, 2.0, 3.0, 3.0, 2.8, 3.0,
                          3.5, 3.2, 2.8, 2.8, 3.0, 3.5, 4.5, 5.5, 6.0, 5.5, 4.0, 2.0])
# fmt: on
_WEEKDAY_PROFILE = _frozen([1.0, 1.0, 1.0, 1.0, 0.95, 0.8, 0.85])  # Monday..Sunday
_RECENCY_TAU_DAYS = 3.0
_RECENT_SHARE = 0.7
LOGGING_POLICIES = {"recency": _RECENT_SHARE, "uniform": 0.0}  # policy -> share drawn by recency
_CATALOGUE_LEAD = timedelta(days=14)

_US = 1_000_000  # microseconds per second
_DAY_US = 86_400 * _US
_SESSION_GAP_US = 40 * 60 * _US  # sessions of a user start this far apart, and end before it
_IMPRESSION_DELAY_US = 1 * _US
_CLICK_DELAY_S = (30.0, 2.0, 595.0)  # lognormal median, min, max (seconds after the impression)
_FOLLOW_DELAY_S = (90.0, 3.0, 1190.0)  # seconds after the click
_LOGOUT_DELAY_S = (10.0, 300.0)  # uniform, after the session's last event

_LANG_NAMES = ("Python", "Java", "JavaScript", "Go", "Rust")
_TOPICS = (
    "test", "debug", "deploy", "profile", "package", "handle errors", "parse JSON",
    "build a CLI", "write async code", "read files", "log properly", "manage dependencies",
)  # fmt: skip
_TEMPLATES = (
    "How to {topic} in {lang}",
    "{lang}: how to {topic}",
    "Learn to {topic} with {lang}",
    "5 mistakes when you {topic} in {lang}",
    "The right way to {topic} in {lang}",
)
_TITLE_PREFIX = ("", "[Video] ", "[Infographic] ", "[Podcast] ")


@dataclass(frozen=True)
class DemoSite:
    """users: user_id, age, gender, country. items: item_id, created_at, content_type, lang,
    author, title. events: the canonical event frame (feedrank.schema.EVENT_COLUMNS), sorted by
    timestamp. truth: the click model. [start, end): the simulated window; every event is in it.
    logging_policy: how slates were drawn ("uniform": impressions carry their propensity).
    """

    users: pl.DataFrame
    items: pl.DataFrame
    events: pl.DataFrame
    truth: DemoTruth
    start: datetime
    end: datetime
    logging_policy: str = "recency"

    def site_data(self) -> SiteData:
        return SiteData(users=self.users, items=self.items, events=self.events)

    def impression_truth(self) -> pl.DataFrame:
        """One row per impression with its true click probability and outcome: event_id,
        user_id, item_id, timestamp, position, gender, age_band, content_type, lang, author,
        taste, item_age_days, z, p_click, clicked (a click on the same user and item followed
        within 10 minutes)."""
        return impression_truth(self.truth, self.users, self.items, self.events)

    def click_probability(self, impressions: pl.DataFrame) -> NDArray[np.float64]:
        """The true click probability of any impressions, logged or hypothetical (what another
        policy would have shown): a frame with user_id, item_id, position (one the truth knows)
        and timestamp (at or after the item's created_at), in its row order. Unknown users,
        items or positions raise ValueError."""
        return click_probability(self.truth, self.users, self.items, impressions)


def position_effect(position: int) -> float:
    """The true position effect: -log2(position) / 3 (0 at 1, -1.0 at 8)."""
    return 0.0 - math.log2(position) / 3.0


def generate_site(
    n_users: int = 2000,
    n_items: int = 400,
    days: int = 28,
    sessions_per_day: float = 0.6,
    slate_size: int = 8,
    seed: int = 0,
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC),
    logging_policy: str = "recency",
    author_affinity: float = 0.0,
    affinity_dim: int = 3,
) -> DemoSite:
    """Simulate a site with a known click model (see the module docstring). A naive `start`
    means UTC. `logging_policy` ("recency" or "uniform") is how slates are drawn;
    `author_affinity` the standard deviation of the latent user-by-author term."""
    _check(
        logging_policy in LOGGING_POLICIES,
        f"logging_policy must be one of {sorted(LOGGING_POLICIES)}",
        logging_policy,
    )
    _check(n_users >= 1, "n_users must be >= 1", n_users)
    _check(
        math.isfinite(author_affinity) and author_affinity >= 0,
        "author_affinity must be >= 0",
        author_affinity,
    )
    _check(affinity_dim >= 1, "affinity_dim must be >= 1", affinity_dim)
    _check(days >= 1, "days must be >= 1", days)
    _check(slate_size >= 1, "slate_size must be >= 1", slate_size)
    _check(n_items >= slate_size, f"n_items must be >= slate_size ({slate_size})", n_items)
    _check(
        math.isfinite(sessions_per_day) and sessions_per_day > 0,
        "sessions_per_day must be > 0",
        sessions_per_day,
    )
    start = start.replace(tzinfo=UTC) if start.tzinfo is None else start.astimezone(UTC)
    end = start + timedelta(days=days)
    rng = np.random.default_rng(seed)
    start_us = (start - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)

    users, u = _users(rng, n_users, sessions_per_day)
    items, it = _items(rng, n_items, slate_size, start_us, days)
    author_quality = rng.normal(0.0, AUTHOR_QUALITY_SD, len(it.author_names))
    user_author = None
    if author_affinity > 0:  # its own generator: the site's other draws stay the same
        arng = np.random.default_rng([seed, 1])
        latent_u = arng.normal(size=(n_users, affinity_dim))
        latent_a = arng.normal(size=(len(it.author_names), affinity_dim))
        user_author = author_affinity * (latent_u @ latent_a.T) / math.sqrt(affinity_dim)
    truth = DemoTruth(
        intercept=INTERCEPT,
        gender_content={
            (g, c): float(GENDER_CONTENT[i, j])
            for i, g in enumerate(GENDERS)
            for j, c in enumerate(CONTENT_TYPES)
        },
        ageband_lang={
            (b, lg): float(AGEBAND_LANG[i, j])
            for i, b in enumerate(AGE_BANDS)
            for j, lg in enumerate(LANGS)
        },
        taste_coef=TASTE_COEF,
        position_effect={p: position_effect(p) for p in range(1, slate_size + 1)},
        freshness_coef=FRESHNESS_COEF,
        author_quality=dict(zip(it.author_names, author_quality.tolist(), strict=True)),
        user_taste=pl.DataFrame(
            {"user_id": users["user_id"]} | {c: u.taste[:, j] for j, c in enumerate(CONTENT_TYPES)}
        ),
        user_author=None
        if user_author is None
        else pl.DataFrame(
            {
                "user_id": users["user_id"].to_numpy().repeat(len(it.author_names)),
                "author": np.tile(np.asarray(it.author_names), n_users),
                "effect": user_author.ravel(),
            }
        ),
    )
    events = _events(
        rng, u, it, author_quality, users["user_id"], items["item_id"], slate_size, start,
        start_us, days, logging_policy, user_author,
    )  # fmt: skip
    return DemoSite(users, items, events, truth, start, end, logging_policy)


def _check(ok: bool, rule: str, got: object) -> None:
    if not ok:
        raise ConfigError(f"{rule}; got {got!r}")


def _ids(prefix: str, n: int, width: int) -> pl.Series:
    """'u00001', 'u00002', ...: zero-padded to `width` digits, or more when n needs them."""
    w = max(width, len(str(n)))
    return pl.select(
        pl.lit(prefix) + pl.int_range(1, n + 1).cast(pl.String).str.zfill(w)
    ).to_series()


@dataclass(frozen=True)
class _Users:
    band: NDArray[np.int64]
    gender: NDArray[np.int64]
    taste: NDArray[np.float64]  # (n_users, n_content_types), rows sum to 1
    activity: NDArray[np.float64]  # expected sessions per day
    device: NDArray[np.int64]  # preferred device


@dataclass(frozen=True)
class _Items:
    created_us: NDArray[np.int64]  # ascending
    content: NDArray[np.int64]
    lang: NDArray[np.int64]
    author: NDArray[np.int64]
    author_names: list[str]


def _users(
    rng: np.random.Generator, n: int, sessions_per_day: float
) -> tuple[pl.DataFrame, _Users]:
    band = rng.choice(len(AGE_BANDS), size=n, p=_BAND_P)
    lo = np.array([a for a, _ in _BAND_AGES])[band]
    hi = np.array([b for _, b in _BAND_AGES])[band]
    age = rng.integers(lo, hi + 1)
    gender = rng.choice(len(GENDERS), size=n, p=_GENDER_P)
    country = rng.choice(len(COUNTRIES), size=n, p=_COUNTRY_P)
    gamma = rng.gamma(TASTE_CONCENTRATION * BASE_PREF[gender])
    taste = gamma / gamma.sum(axis=1, keepdims=True)
    activity = sessions_per_day * rng.lognormal(-(_ACTIVITY_SIGMA**2) / 2, _ACTIVITY_SIGMA, n)
    device = rng.choice(len(DEVICES), size=n, p=_DEVICE_P)
    users = pl.DataFrame(
        {
            "user_id": _ids("u", n, 5),
            "age": pl.Series(age, dtype=pl.Int64),
            "gender": pl.Series(GENDERS).gather(gender),
            "country": pl.Series(COUNTRIES).gather(country),
        }
    )
    return users, _Users(band, gender, taste, activity, device)


def _items(
    rng: np.random.Generator, n: int, slate_size: int, start_us: int, days: int
) -> tuple[pl.DataFrame, _Items]:
    lead_us = _CATALOGUE_LEAD // timedelta(microseconds=1)
    n_pre = min(n, max(slate_size, round(n * lead_us / (lead_us + days * _DAY_US))))
    created = np.sort(
        np.concatenate(
            [
                rng.integers(start_us - lead_us, start_us, n_pre),
                rng.integers(start_us, start_us + days * _DAY_US, n - n_pre),
            ]
        )
    ).astype(np.int64)
    content = rng.choice(len(CONTENT_TYPES), size=n, p=_CONTENT_P)
    lang = rng.choice(len(LANGS), size=n, p=_LANG_P)
    n_authors = max(5, n // 10)
    author_w = 1.0 / np.arange(1, n_authors + 1) ** 0.8
    author = rng.choice(n_authors, size=n, p=author_w / author_w.sum())
    author_names = _ids("a", n_authors, 3).to_list()
    parts = pl.DataFrame(
        {
            "prefix": pl.Series(_TITLE_PREFIX).gather(content),
            "template": pl.Series(_TEMPLATES).gather(rng.integers(0, len(_TEMPLATES), n)),
            "topic": pl.Series(_TOPICS).gather(rng.integers(0, len(_TOPICS), n)),
            "lang": pl.Series(_LANG_NAMES).gather(lang),
        }
    )
    title = parts.select(
        pl.col("prefix")
        + pl.col("template")
        .str.replace("{topic}", pl.col("topic"), literal=True)
        .str.replace("{lang}", pl.col("lang"), literal=True)
    ).to_series()
    items = pl.DataFrame(
        {
            "item_id": _ids("p", n, 5),
            "created_at": _timestamps(created),
            "content_type": pl.Series(CONTENT_TYPES).gather(content),
            "lang": pl.Series(LANGS).gather(lang),
            "author": pl.Series(author_names).gather(author),
            "title": title,
        }
    )
    return items, _Items(created, content, lang, author, author_names)


def _timestamps(us: NDArray[np.int64]) -> pl.Series:
    return pl.Series(us, dtype=pl.Int64).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


def _delays_us(
    rng: np.random.Generator, n: int, median_s: float, lo_s: float, hi_s: float
) -> NDArray[np.int64]:
    """Lognormal delays (sigma 1) around median_s, clipped to [lo_s, hi_s], in microseconds."""
    s = np.clip(rng.lognormal(math.log(median_s), 1.0, n), lo_s, hi_s)
    return (s * _US).astype(np.int64)


def _sessions(
    rng: np.random.Generator, users: _Users, start: datetime, start_us: int, days: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(user index, start time in us) of every session, sorted by time."""
    n_users = len(users.activity)
    weekday = _WEEKDAY_PROFILE / _WEEKDAY_PROFILE.mean()
    day_factor = weekday[(start.weekday() + np.arange(days)) % 7]
    counts = rng.poisson(users.activity[:, None] * day_factor[None, :]).ravel()
    user = np.repeat(np.repeat(np.arange(n_users), days), counts)
    day = np.repeat(np.tile(np.arange(days), n_users), counts)
    hours = np.roll(_HOUR_PROFILE, -start.hour)  # hour offsets from `start`, on the UTC clock
    hour = rng.choice(24, size=len(user), p=hours / hours.sum())
    t = start_us + day * _DAY_US + hour * 3600 * _US + rng.integers(0, 3600 * _US, len(user))
    keep = t < start_us + days * _DAY_US - _SESSION_GAP_US
    user, t = user[keep], t[keep]
    order = np.lexsort((t, user))
    user, t = user[order], t[order]
    close = np.zeros(len(t), dtype=bool)
    close[1:] = (user[1:] == user[:-1]) & (t[1:] - t[:-1] < _SESSION_GAP_US)
    user, t = user[~close], t[~close]
    order = np.lexsort((user, t))
    return user[order].astype(np.int64), t[order].astype(np.int64)


def _slates(
    rng: np.random.Generator,
    session_us: NDArray[np.int64],
    created_us: NDArray[np.int64],
    k: int,
    recent_share: float,
) -> NDArray[np.int64]:
    """k distinct items created before each session, drawn without replacement with weights
    (1 - recent_share) uniform + recent_share recency (exp(-age / 3 days)) over the items then
    in the catalogue (recent_share 0: a uniform draw).

    The first k distinct values of an i.i.d. sequence drawn from w are a draw without
    replacement proportional to w (successive sampling), so rows draw i.i.d. candidates in
    rounds until each has k distinct ones; the cost does not grow with the catalogue. The order
    of the draw is then shuffled into positions."""
    n = len(session_us)
    n_elig = np.searchsorted(created_us, session_us, side="left")
    # exp(-(t - c) / tau) is exp(-t / tau) * exp(c / tau): the first factor cancels in the
    # normalisation, so the recency part is an inverse-CDF draw over one global cumsum.
    recency = np.exp((created_us - created_us[-1]) / (_RECENCY_TAU_DAYS * _DAY_US))
    cum = np.cumsum(recency)
    out = np.full((n, k), -1, dtype=np.int64)
    todo = np.arange(n)
    while todo.size:
        ne = n_elig[todo]
        draws = _draw_items(rng, ne, cum, 2 * k, recent_share)
        cand = np.concatenate([out[todo], draws], axis=1)
        order = np.argsort(cand, axis=1, kind="stable")
        ranked = np.take_along_axis(cand, order, axis=1)
        repeat = np.zeros(ranked.shape, dtype=bool)
        repeat[:, 1:] = ranked[:, 1:] == ranked[:, :-1]
        first = np.empty_like(repeat)
        np.put_along_axis(first, order, ~repeat, axis=1)
        first &= cand >= 0
        rank = np.cumsum(first, axis=1)
        take = first & (rank <= k)
        rows, cols = np.nonzero(take)
        picked = np.full((len(todo), k), -1, dtype=np.int64)
        picked[rows, rank[rows, cols] - 1] = cand[rows, cols]
        out[todo] = picked
        todo = todo[take.sum(axis=1) < k]
    shuffle = np.argsort(rng.random((n, k)), axis=1)
    return np.take_along_axis(out, shuffle, axis=1)


def _draw_items(
    rng: np.random.Generator,
    n_elig: NDArray[np.int64],
    cum: NDArray[np.float64],
    m: int,
    recent_share: float,
) -> NDArray[np.int64]:
    """m i.i.d. item indices per row from the mixture over the first n_elig[row] items."""
    shape = (len(n_elig), m)
    hi = n_elig[:, None]
    uniform = rng.integers(0, hi, size=shape)
    if recent_share == 0.0:
        return uniform
    mass = cum[hi - 1]
    recent = np.searchsorted(cum, rng.random(shape) * mass, side="right")
    recent = np.where(mass > 0, np.minimum(recent, hi - 1), uniform)  # mass 0: underflow
    return np.where(rng.random(shape) < recent_share, recent, uniform)


def _events(
    rng: np.random.Generator,
    users: _Users,
    items: _Items,
    author_quality: NDArray[np.float64],
    user_ids: pl.Series,
    item_ids: pl.Series,
    slate_size: int,
    start: datetime,
    start_us: int,
    days: int,
    logging_policy: str,
    user_author: NDArray[np.float64] | None = None,
) -> pl.DataFrame:
    s_user, s_t = _sessions(rng, users, start, start_us, days)
    n_s, k = len(s_t), slate_size
    pref = users.device[s_user]
    s_device = np.where(
        rng.random(n_s) < _PREFERRED_DEVICE_P, pref, rng.integers(0, len(DEVICES), n_s)
    )

    # impressions and the true click model
    slate = _slates(rng, s_t, items.created_us, k, LOGGING_POLICIES[logging_policy])
    i_sess = np.repeat(np.arange(n_s), k)
    i_item = slate.ravel()
    i_pos = np.tile(np.arange(1, k + 1), n_s)
    i_ts = s_t[i_sess] + _IMPRESSION_DELAY_US
    iu = s_user[i_sess]
    ct = items.content[i_item]
    age_days = (i_ts - items.created_us[i_item]) / _DAY_US
    pos_effect = np.array([position_effect(p) for p in range(1, k + 1)])
    z = (
        INTERCEPT
        + GENDER_CONTENT[users.gender[iu], ct]
        + AGEBAND_LANG[users.band[iu], items.lang[i_item]]
        + TASTE_COEF * users.taste[iu, ct]
        + pos_effect[i_pos - 1]
        + FRESHNESS_COEF * np.log1p(age_days)
        + author_quality[items.author[i_item]]
    )
    if user_author is not None:
        z = z + user_author[iu, items.author[i_item]]
    clicked = np.flatnonzero(rng.random(len(z)) < 1.0 / (1.0 + np.exp(-z)))
    c_sess, c_item = i_sess[clicked], i_item[clicked]
    c_ts = i_ts[clicked] + _delays_us(rng, len(clicked), *_CLICK_DELAY_S)

    # parts: (type code, session, item (-1: none), position (0: none), timestamp)
    parts = [
        (0, np.arange(n_s), np.full(n_s, -1), np.zeros(n_s, np.int64), s_t),
        (1, i_sess, i_item, i_pos, i_ts),
        (2, c_sess, c_item, np.zeros(len(c_ts), np.int64), c_ts),
    ]
    last = s_t + _IMPRESSION_DELAY_US
    np.maximum.at(last, c_sess, c_ts)
    for code, p in enumerate(FOLLOW_UP_P.values(), start=3):
        f = np.flatnonzero(rng.random(len(c_ts)) < p)
        f_ts = c_ts[f] + _delays_us(rng, len(f), *_FOLLOW_DELAY_S)
        parts.append((code, c_sess[f], c_item[f], np.zeros(len(f), np.int64), f_ts))
        np.maximum.at(last, c_sess[f], f_ts)
    lo, hi = _LOGOUT_DELAY_S
    logout = last + rng.integers(int(lo * _US), int(hi * _US), n_s)
    parts.append(
        (len(EVENT_TYPES) - 1, np.arange(n_s), np.full(n_s, -1), np.zeros(n_s, np.int64), logout)
    )

    e_type = np.concatenate([np.full(len(p[1]), code) for code, *p in parts])
    e_sess = np.concatenate([p[1] for p in parts])
    e_item = np.concatenate([p[2] for p in parts])
    e_pos = np.concatenate([p[3] for p in parts])
    e_ts = np.concatenate([p[4] for p in parts]).astype(np.int64)
    e_user = s_user[e_sess]
    order = np.lexsort((e_item, e_pos, e_type, e_user, e_ts))
    n_e = len(order)
    events = pl.DataFrame(
        {
            "event_id": _ids("e", n_e, 8),
            "user_id": user_ids.gather(e_user[order]),
            "item_id": pl.concat([pl.Series([""]), item_ids]).gather(e_item[order] + 1),
            "type": pl.Series(EVENT_TYPES).gather(e_type[order]),
            "timestamp": _timestamps(e_ts[order]),
            "value": np.ones(n_e),
            "position": pl.Series(e_pos[order], dtype=pl.Int32),
            "device": pl.Series(DEVICES).gather(s_device[e_sess[order]]),
        }
    )
    context = pl.lit(None, pl.String)
    if logging_policy == "uniform":  # exact: every item then in the catalogue, at every position
        n_elig = np.searchsorted(items.created_us, s_t, side="left")
        is_imp = e_type[order] == EVENT_TYPES.index("impression")
        propensity = np.where(is_imp, 1.0 / n_elig[e_sess[order]], np.nan)
        events = events.with_columns(__p=pl.Series(propensity).fill_nan(None))
        context = pl.when(pl.col("__p").is_not_null()).then(
            pl.struct(propensity=pl.col("__p")).struct.json_encode()
        )
    return events.with_columns(
        position=pl.when(pl.col("position") > 0).then(pl.col("position")),
        context=context,
    ).select(pl.col(c).cast(t) for c, t in EVENT_COLUMNS.items())
