"""Settings: the engagement rule in one place (weights, ratings, unknown types), reading a TOML
file with errors that name the file, the key and the allowed values, and diffs."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from feedrank.datasets.clickstream import clickstream_settings
from feedrank.exceptions import ConfigError
from feedrank.settings import DEFAULT_TYPE_WEIGHTS, Settings


def rule(settings: Settings, rows: list[tuple[str, str, float]]) -> pl.DataFrame:
    """item_id, type, value -> with the settings' weight and engagement flag."""
    df = pl.DataFrame(rows, schema=["item_id", "type", "value"], orient="row")
    types = sorted(set(df["type"]))
    return df.with_columns(weight=settings.weight_expr(types), engaged=settings.engaged_expr(types))


# -- the engagement rule -------------------------------------------------------------------------
def test_default_engagements_are_weighted_item_types_but_impressions() -> None:
    s = Settings()
    assert s.engagement_types is None
    got = rule(
        s,
        [
            ("a", "impression", 1.0),
            ("a", "view", 1.0),
            ("a", "like", 1.0),
            ("a", "purchase", 2.0),
            ("", "login", 1.0),
            ("a", "clik", 1.0),  # unknown: unknown_type_weight (1)
        ],
    )
    assert got["engaged"].to_list() == [False, True, True, True, False, True]
    # type weight x value; impressions and item-less events weigh nothing
    assert got["weight"].to_list() == [0.0, 1.0, 2.0, 10.0, 0.0, 1.0]
    assert s.is_engagement_type("clik") and not s.is_engagement_type("impression")
    assert not s.is_engagement_type("visit")  # item-less, even with a weight
    assert not Settings(type_weights={**DEFAULT_TYPE_WEIGHTS, "view": 0.0}).is_engagement_type(
        "view"
    )


def test_unknown_types_follow_unknown_type_weight() -> None:
    zero = Settings(unknown_type_weight=0.0)
    got = rule(zero, [("a", "clik", 3.0)])
    assert got.row(0, named=True) == {
        "item_id": "a",
        "type": "clik",
        "value": 3.0,
        "weight": 0.0,
        "engaged": False,
    }
    got = rule(Settings(unknown_type_weight=0.5), [("a", "clik", 3.0)])
    assert got["weight"].to_list() == [1.5] and got["engaged"].to_list() == [True]


def test_a_rating_counts_when_its_value_reaches_the_threshold() -> None:
    rows = [("a", "rating", v) for v in (1.0, 3.0, 3.4, 3.5, 4.0, 5.0)] + [("b", "click", 2.5)]
    default = rule(Settings(), rows)  # rating_threshold 3.5
    assert default["engaged"].to_list() == [False, False, False, True, True, True, True]
    # A rating's value decides whether it counts (x 1 or x 0), it does not scale its weight;
    # any other type's value does.
    assert default["weight"].to_list() == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 2.5]
    strict = rule(Settings(rating_threshold=4.5, type_weights={"rating": 2.0}), rows)
    assert strict["engaged"].to_list() == [False, False, False, False, False, True, True]
    assert strict["weight"].to_list() == [0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 2.5]
    assert Settings().describe_types({"rating": 6})[0]["note"] == "counts when value >= 3.5"


def test_explicit_engagement_types_are_the_only_engagements() -> None:
    s = Settings(engagement_types=("purchase",))
    got = rule(s, [("a", "view", 1.0), ("a", "purchase", 1.0), ("a", "clik", 1.0)])
    assert got["engaged"].to_list() == [False, True, False]
    assert got["weight"].to_list() == [1.0, 5.0, 1.0]  # weights are not the engagement rule


def test_seen_is_any_item_event_but_an_impression() -> None:
    df = pl.DataFrame(
        {"item_id": ["a", "a", "a", ""], "type": ["impression", "rating", "clik", "login"]}
    )
    assert df.select(Settings.seen_expr())["item_id"].to_list() == [False, True, True, False]


# -- from_file -------------------------------------------------------------------------------------
def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "settings.toml"
    path.write_text(text)
    return path


def test_a_file_overrides_some_weights_and_keeps_the_other_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'engagement_types = ["like", "purchase"]\nrating_threshold = 4\n'
        "[type_weights]\nlike = 2.5\nwatch = 1\n",
    )
    s = Settings.from_file(path)
    assert s.type_weights == {**DEFAULT_TYPE_WEIGHTS, "like": 2.5, "watch": 1.0}
    assert s.engagement_types == ("like", "purchase")
    assert s.rating_threshold == 4.0
    assert Settings().diff(s) == [
        "type_weights.like: 2.0 -> 2.5",
        "type_weights.watch: (none) -> 1.0",
        "engagement_types: None -> ('like', 'purchase')",
        "rating_threshold: 3.5 -> 4.0",
    ]


def test_settings_survive_their_dict() -> None:
    for s in (
        Settings(),
        clickstream_settings(),
        Settings(experiments={"e": {"a": 0.5, "b": 0.5}}),
    ):
        assert Settings.from_dict(s.to_dict()) == s


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        pytest.param(
            "label_windw_seconds = 60\n",
            [
                "settings keys must be among",
                "'label_window_seconds'",
                "'type_weights'",
                "got ['label_windw_seconds']",
            ],
            id="unknown key",
        ),
        pytest.param(
            '[type_weights]\nclick = "high"\n',
            ["type_weights.click must be a finite number; got 'high'"],
            id="non-numeric weight",
        ),
        pytest.param(
            "[type_weights]\nclick = -1\n",
            ["type_weights.click must be >= 0; got -1"],
            id="negative weight",
        ),
        pytest.param(
            'engagement_types = ["click", "like", "click"]\n',
            ["engagement_types must list each value once; got ['click'] more than once"],
            id="a type listed twice",
        ),
        pytest.param(
            'engagement_types = ["like"]\n[type_weights]\nlike = 0\n',
            ["engagement types must have a weight > 0 in type_weights; got weight 0 for ['like']"],
            id="engagement type with weight 0",
        ),
        pytest.param(
            'engagement_types = ["clik"]\n',
            ["engagement_types must be among the configured types", "'click'", "got ['clik']"],
            id="engagement type not configured",
        ),
        pytest.param(
            'rating_threshold = "four"\n',
            ["rating_threshold must be a finite number; got 'four'"],
            id="non-numeric threshold",
        ),
        pytest.param(
            'engagement_types = "click"\n',
            ["engagement_types must be a list; got 'click'"],
            id="not a list",
        ),
        pytest.param(
            "negative_ratio = 0\n", ["negative_ratio must be >= 1; got 0"], id="out of range"
        ),
    ],
)
def test_a_bad_file_gets_one_message_naming_file_key_and_allowed_values(
    tmp_path: Path, text: str, fragments: list[str]
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        Settings.from_file(path)
    message = str(info.value)
    assert message.endswith(f"({path})"), message
    for fragment in fragments:
        assert fragment in message, message


def test_unreadable_toml_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "seed = 1\nnegative_ratio = 2\nlabel_window_seconds = = 3\n")
    with pytest.raises(ConfigError) as info:
        Settings.from_file(path)
    assert f"settings file {path} must be readable TOML" in str(info.value)
    assert "line 3" in str(info.value)
    with pytest.raises(ConfigError, match="must be readable TOML"):
        Settings.from_file(tmp_path / "missing.toml")


def test_a_weight_listed_twice_names_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "[type_weights]\nclick = 1\nclick = 2\n")
    with pytest.raises(ConfigError, match=r"type_weights\.click"):
        Settings.from_file(path)


# -- diff ------------------------------------------------------------------------------------------
def test_diff_lists_every_setting_that_differs() -> None:
    a = Settings()
    assert a.diff(Settings()) == []
    b = Settings(rating_threshold=4.0, negative_ratio=2, age_bands=(18, 30))
    assert a.diff(b) == [
        "rating_threshold: 3.5 -> 4.0",
        "negative_ratio: 4 -> 2",
        "age_bands: (18, 25, 35, 45, 55, 65) -> (18, 30)",
    ]
    assert b.diff(a) == [
        "rating_threshold: 4.0 -> 3.5",
        "negative_ratio: 2 -> 4",
        "age_bands: (18, 30) -> (18, 25, 35, 45, 55, 65)",
    ]
    weights = a.with_types({"watch": 0.5})
    assert a.diff(weights) == ["type_weights.watch: (none) -> 0.5"]
