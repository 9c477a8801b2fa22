"""Known-answer tests of record validation (feedrank.schema)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone

import polars as pl
import pytest

from feedrank.exceptions import RowError, ValidationError
from feedrank.io import import_frame
from feedrank.schema import (
    EVENT_COLUMNS,
    empty_events,
    parse_timestamp,
    validate_events,
    validate_items,
    validate_users,
)
from feedrank.settings import DEFAULT_TYPE_WEIGHTS, Settings
from feedrank.store.sqlite import SQLiteStore

NOON = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
NOON_EPOCH = 1709294400  # 2024-03-01T12:00:00Z


def events(**cols: list[object]) -> pl.DataFrame:
    """An input frame of text columns (as a CSV gives them), defaults filled in per row."""
    n = max(len(v) for v in cols.values())
    base: dict[str, list[object]] = {
        "user_id": ["u1"] * n,
        "item_id": ["i1"] * n,
        "type": ["click"] * n,
        "timestamp": ["2024-03-01T12:00:00Z"] * n,
    }
    base.update(cols)
    return pl.DataFrame(base)


def only_error(v: object) -> RowError:
    assert v.n_bad == 1, v.errors  # type: ignore[attr-defined]
    assert len(v.errors) == 1  # type: ignore[attr-defined]
    return v.errors[0]  # type: ignore[attr-defined,no-any-return]


# -- events: the canonical frame -------------------------------------------------------------------
def test_a_good_event_becomes_the_canonical_row(settings: Settings) -> None:
    df = pl.DataFrame(
        {
            "event_id": ["e1"],
            "user_id": [" 0042 "],
            "item_id": ["007"],
            "type": [" Click "],
            "timestamp": ["2024-03-01T13:00:00.250+01:00"],
            "value": ["2.5"],
            "position": ["3"],
            "device": ["mobile"],
        }
    )
    v = validate_events(df, settings)
    assert v.errors == [] and v.n_bad == 0
    assert v.good.schema == pl.Schema(EVENT_COLUMNS)
    assert v.good.to_dicts() == [
        {
            "event_id": "e1",
            "user_id": "0042",
            "item_id": "007",
            "type": "click",
            "timestamp": NOON + timedelta(milliseconds=250),
            "value": 2.5,
            "position": 3,
            "device": "mobile",
            "context": None,
        }
    ]


def test_minimal_columns_fill_the_optional_ones(settings: Settings) -> None:
    df = pl.DataFrame({"user_id": ["u1"], "type": ["login"], "timestamp": [NOON_EPOCH]})
    v = validate_events(df, settings)
    assert v.good.to_dicts() == [
        {
            "event_id": None,
            "user_id": "u1",
            "item_id": "",
            "type": "login",
            "timestamp": NOON,
            "value": 1.0,
            "position": None,
            "device": None,
            "context": None,
        }
    ]


def test_empty_events_has_the_canonical_schema() -> None:
    assert empty_events().schema == pl.Schema(EVENT_COLUMNS)
    assert empty_events().height == 0


# -- events: errors name field, allowed values, value got and line ---------------------------------
def test_unknown_type_is_accepted_and_left_to_the_settings(settings: Settings) -> None:
    # Changed on purpose: types are open strings. An unknown type ('clik') is no longer a row
    # error at validation; it is kept, weighs the settings' unknown_type_weight, and the import
    # summary notes it (Settings.describe_types).
    v = validate_events(events(type=["click", "click", "clik"]), settings, source="events.csv")
    assert v.errors == [] and v.n_bad == 0
    assert v.good["type"].to_list() == ["click", "click", "clik"]
    assert "clik" not in DEFAULT_TYPE_WEIGHTS
    assert settings.weight_of("clik") == settings.unknown_type_weight == 1.0
    (row,) = [r for r in settings.describe_types({"clik": 1, "click": 2}) if r["type"] == "clik"]
    assert row["note"] == "not in the settings: weight 1"
    assert row["engagement"] is True


def test_configured_types_are_accepted() -> None:
    settings = Settings().with_types({"download": 2.0})
    v = validate_events(events(type=["download", "clik"]), settings)
    assert v.good["type"].to_list() == ["download", "clik"] and v.n_bad == 0
    notes = {r["type"]: r["note"] for r in settings.describe_types({"download": 1, "clik": 1})}
    assert notes == {"download": "", "clik": "not in the settings: weight 1"}
    assert settings.weight_of("download") == 2.0


@pytest.mark.parametrize(
    ("column", "bad_value", "field", "fragments"),
    [
        ("user_id", "", "user_id", ["user_id is required"]),
        ("user_id", "   ", "user_id", ["user_id is required"]),
        ("user_id", None, "user_id", ["user_id is required"]),
        ("type", "", "type", ["type is required"]),
        ("item_id", "", "item_id", ["'click'", "'login'", "'logout'", "'visit'"]),
        ("item_id", None, "item_id", ["'click'", "'login'"]),
        ("timestamp", "yesterday", "timestamp", ["ISO 8601", "'yesterday'"]),
        ("timestamp", "2024-02-30", "timestamp", ["'2024-02-30'"]),
        ("timestamp", None, "timestamp", ["'<missing>'"]),
        ("value", "abc", "value", ["finite number", "'abc'"]),
        ("value", "inf", "value", ["finite number", "'inf'"]),
        ("value", "NaN", "value", ["'NaN'"]),
        ("position", "1.5", "position", ["whole number >= 0", "'1.5'"]),
        ("position", "-1", "position", ["whole number >= 0", "'-1'"]),
        ("position", "first", "position", ["'first'"]),
    ],
)
def test_a_bad_field_is_reported_with_its_line_and_the_rest_kept(
    settings: Settings, column: str, bad_value: object, field: str, fragments: list[str]
) -> None:
    good = {"user_id": "u1", "item_id": "i1", "type": "click", "value": "2", "position": "0"}
    good["timestamp"] = "2024-03-01T12:00:00Z"
    rows = [dict(good, user_id=f"u{n}") for n in range(5)]
    rows[3][column] = bad_value
    v = validate_events(pl.DataFrame(rows, schema=dict.fromkeys(good, pl.String)), settings)
    err = only_error(v)
    assert err.field == field
    assert err.line == 5  # row index 3, first data row is line 2
    for fragment in fragments:
        assert fragment in err.message, err.message
    assert v.good["user_id"].to_list() == ["u0", "u1", "u2", "u4"]


def test_every_bad_row_is_reported_with_its_own_line(settings: Settings) -> None:
    df = events(
        type=["click", "", "click", "view", "like"],
        timestamp=["2024-03-01", "2024-03-01", "never", "2024-03-01", "2024-03-01"],
        item_id=["a", "b", "c", "", "e"],
    )
    v = validate_events(df, settings, first_line=1)
    assert v.n_bad == 3
    assert [(e.line, e.field) for e in v.errors] == [(2, "type"), (3, "timestamp"), (4, "item_id")]
    assert v.good["item_id"].to_list() == ["a", "e"]


def test_first_line_shifts_line_numbers(settings: Settings) -> None:
    v = validate_events(events(timestamp=["never"]), settings, first_line=200_002)
    assert only_error(v).line == 200_002


def test_max_errors_caps_the_list_but_not_the_count(settings: Settings) -> None:
    v = validate_events(events(timestamp=["nope"] * 30 + ["2024-03-01"]), settings, max_errors=10)
    assert v.n_bad == 30
    assert len(v.errors) == 10
    assert [e.line for e in v.errors] == list(range(2, 12))
    assert v.good.height == 1


def test_missing_required_column_names_it_and_the_columns(settings: Settings) -> None:
    df = pl.DataFrame({"user_id": ["u1"], "type": ["click"], "when": ["2024-03-01"]})
    with pytest.raises(ValidationError) as info:
        validate_events(df, settings, source="events.csv")
    (err,) = info.value.errors
    assert err.field == "timestamp"
    assert err.line is None
    assert "'timestamp' is required" in err.message
    assert "['user_id', 'type', 'when']" in err.message
    assert "events.csv" in str(info.value)


def test_validation_error_message_shows_lines_and_how_many_more() -> None:
    errors = [RowError(n, "type", f"bad {n}", "e.csv") for n in range(2, 9)]
    msg = str(ValidationError(errors))
    assert msg.startswith("7 bad row(s): bad 2 (line 2 of e.csv); bad 3 (line 3 of e.csv)")
    assert "bad 7" not in msg
    assert msg.endswith("(and 2 more)")
    assert ValidationError(errors[:1], total_bad=100).total_bad == 100


# -- events: item-less types -----------------------------------------------------------------------
@pytest.mark.parametrize("type_", ["login", "logout", "visit", "LOGIN"])
@pytest.mark.parametrize("item", ["", None, "  "])
def test_empty_item_is_accepted_for_itemless_types(
    settings: Settings, type_: str, item: str | None
) -> None:
    v = validate_events(events(type=[type_], item_id=[item]), settings)
    assert v.n_bad == 0
    assert v.good["item_id"].to_list() == [""]
    assert v.good["type"].to_list() == [type_.lower()]


@pytest.mark.parametrize("type_", ["click", "view", "impression", "purchase"])
def test_empty_item_is_rejected_for_item_types(settings: Settings, type_: str) -> None:
    v = validate_events(events(type=[type_], item_id=[""]), settings)
    err = only_error(v)
    assert err.field == "item_id"
    assert f"type '{type_}'" in err.message
    assert v.good.height == 0


def test_missing_item_column_is_fine_for_itemless_events_only(settings: Settings) -> None:
    df = pl.DataFrame(
        {"user_id": ["u1", "u2"], "type": ["visit", "click"], "timestamp": [NOON_EPOCH] * 2}
    )
    v = validate_events(df, settings)
    assert v.good["user_id"].to_list() == ["u1"]
    assert only_error(v).field == "item_id"


# -- timestamps ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-03-01T12:00:00Z", NOON),
        ("2024-03-01T12:00:00z", NOON),
        ("2024-03-01T12:00:00.123456Z", NOON + timedelta(microseconds=123456)),
        ("2024-03-01T12:00:00.5Z", NOON + timedelta(milliseconds=500)),
        ("2024-03-01T13:00:00+01:00", NOON),
        ("2024-03-01T13:00:00+0100", NOON),
        ("2024-03-01T13:00:00+01", NOON),
        ("2024-03-01T06:30:00-05:30", NOON),
        ("2024-03-02T01:45:00+13:45", NOON),
        ("2024-03-01 13:00:00.000001+01:00", NOON + timedelta(microseconds=1)),
        ("2024-03-01T12:00:00", NOON),  # naive means UTC
        ("2024-03-01 12:00:00", NOON),
        ("2024-03-01 12:00:00.999999", NOON + timedelta(microseconds=999999)),
        ("2024-03-01T12:00", NOON),
        ("2024-03-01 12:00", NOON),
        ("2024-03-01", NOON - timedelta(hours=12)),
        ("  2024-03-01T12:00:00Z  ", NOON),
        ("1709294400", NOON),
        ("1709294400.5", NOON + timedelta(milliseconds=500)),
        ("1709294400.000001", NOON + timedelta(microseconds=1)),
        ("0", datetime(1970, 1, 1, tzinfo=UTC)),
        ("-1.5", datetime(1969, 12, 31, 23, 59, 58, 500000, tzinfo=UTC)),
        pytest.param(
            "2024-03-01T12:00Z",
            NOON,
        ),
    ],
)
def test_timestamp_text_parses_to_the_utc_instant(text: str, expected: datetime) -> None:
    got = pl.DataFrame({"t": [text]}).select(parse_timestamp(pl.col("t")))["t"]
    assert got.dtype == pl.Datetime("us", "UTC")
    assert got.to_list() == [expected]


@pytest.mark.parametrize(
    "text", ["", "yesterday", "2024-13-01", "2024-02-30", "12:00", "2024-03-01T25:00:00Z"]
)
def test_unparseable_timestamp_text_is_null(text: str) -> None:
    got = pl.DataFrame({"t": [text]}).select(parse_timestamp(pl.col("t")))["t"]
    assert got.to_list() == [None]


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "1e30"])
def test_non_finite_or_huge_epoch_is_a_row_error(settings: Settings, bad: str) -> None:
    try:
        v = validate_events(events(timestamp=["2024-03-01", bad]), settings)
    except pl.exceptions.PolarsError as exc:
        raise AssertionError(f"validation crashed: {exc!r}") from exc
    assert v.good.height == 1
    err = only_error(v)
    assert (err.field, err.line) == ("timestamp", 3)


def test_epoch_seconds_as_numbers_parse(settings: Settings) -> None:
    ints = validate_events(events(timestamp=[NOON_EPOCH, NOON_EPOCH + 60]), settings)
    assert ints.good["timestamp"].to_list() == [NOON, NOON + timedelta(minutes=1)]
    floats = validate_events(events(timestamp=[NOON_EPOCH + 0.25, NOON_EPOCH - 0.5]), settings)
    assert floats.good["timestamp"].to_list() == [
        NOON + timedelta(milliseconds=250),
        NOON - timedelta(milliseconds=500),
    ]


def test_datetime_columns_are_converted_to_utc(settings: Settings) -> None:
    naive = validate_events(events(timestamp=[datetime(2024, 3, 1, 12)]), settings)
    assert naive.good["timestamp"].to_list() == [NOON]
    oslo = timezone(timedelta(hours=1))
    aware = pl.DataFrame({"timestamp": [datetime(2024, 3, 1, 13, tzinfo=oslo)]}).with_columns(
        pl.col("timestamp").dt.convert_time_zone("Europe/Oslo")
    )
    zoned = validate_events(events(timestamp=aware["timestamp"].to_list()), settings)
    assert zoned.good["timestamp"].dtype == pl.Datetime("us", "UTC")
    assert zoned.good["timestamp"].to_list() == [NOON]
    dates = validate_events(events(timestamp=[date(2024, 3, 1)]), settings)
    assert dates.good["timestamp"].to_list() == [datetime(2024, 3, 1, tzinfo=UTC)]


# -- value, position, context, ids -----------------------------------------------------------------
def test_value_defaults_to_one(settings: Settings) -> None:
    without = validate_events(events(type=["click", "like"]), settings)
    assert without.good["value"].to_list() == [1.0, 1.0]
    mixed = validate_events(events(value=["4.5", None, "0", "-2"]), settings)
    assert mixed.good["value"].to_list() == [4.5, 1.0, 0.0, -2.0]


def test_position_must_be_a_whole_number_not_below_zero(settings: Settings) -> None:
    v = validate_events(events(position=["0", "3", "3.0", None, "2.5", "-1", "x"]), settings)
    assert v.good["position"].dtype == pl.Int32
    assert v.good["position"].to_list() == [0, 3, 3, None]
    assert [(e.line, e.field) for e in v.errors] == [
        (6, "position"),
        (7, "position"),
        (8, "position"),
    ]


def test_extra_columns_are_kept_as_json_context(settings: Settings) -> None:
    df = events(
        user_id=["u1", "u2"],
        page=["home", None],
        ab_group=["B", "A"],
        device=["mobile", "desktop"],
        value=["1", "2"],
    )
    v = validate_events(df, settings)
    assert v.good.columns == list(EVENT_COLUMNS)  # no extra column survives as a column
    contexts = [json.loads(c) for c in v.good["context"]]
    assert contexts == [{"page": "home", "ab_group": "B"}, {"page": None, "ab_group": "A"}]
    assert v.good["device"].to_list() == ["mobile", "desktop"]  # a core column, not context


def test_typed_extra_columns_keep_their_json_types(settings: Settings) -> None:
    df = events(scroll=[0.75], n=[3], flag=[True])
    (ctx,) = validate_events(df, settings).good["context"]
    assert json.loads(ctx) == {"scroll": 0.75, "n": 3, "flag": True}


def test_no_extra_columns_means_null_context(settings: Settings) -> None:
    assert validate_events(events(type=["click"]), settings).good["context"].to_list() == [None]


def test_ids_are_opaque_strings(settings: Settings) -> None:
    cookie = "20239734541707312813871963623233721188"
    v = validate_events(
        events(user_id=["0042", cookie, " 7 "], item_id=["007", "1e3", "00"]), settings
    )
    assert v.good["user_id"].to_list() == ["0042", cookie, "7"]
    assert v.good["item_id"].to_list() == ["007", "1e3", "00"]
    numeric = validate_events(events(user_id=[42, 7], item_id=[1, 2]), settings)
    assert numeric.good["user_id"].to_list() == ["42", "7"]
    assert numeric.good["item_id"].to_list() == ["1", "2"]


def test_event_id_is_kept(settings: Settings) -> None:
    v = validate_events(events(event_id=["e1", None]), settings)
    assert v.good["event_id"].to_list() == ["e1", None]


# -- propensity: the logging policy's P(this item at this position) ----------------------------
def test_propensity_must_be_in_0_1_and_is_kept_as_a_number(settings: Settings) -> None:
    df = events(type=["impression"] * 7, propensity=["0.25", "1", None, "0", "1.5", "abc", "nan"])
    v = validate_events(df, settings, source="log.csv")
    assert [json.loads(c)["propensity"] for c in v.good["context"]] == [0.25, 1.0, None]
    assert [(e.line, e.field) for e in v.errors] == [
        (5, "propensity"),
        (6, "propensity"),
        (7, "propensity"),
        (8, "propensity"),
    ]
    assert v.errors[1].message == "propensity must be a number in (0, 1]; got '1.5'"
    assert "got '0'" in v.errors[0].message and "got 'abc'" in v.errors[2].message
    assert str(v.errors[1]).endswith("(line 6 of log.csv)")


def test_propensity_inside_a_context_object_is_checked(settings: Settings) -> None:
    ctx = ['{"propensity": 0.5, "page": "home"}', '{"propensity": "2"}', '{"propensity": true}']
    v = validate_events(events(type=["impression"] * 3, context=ctx), settings)
    assert [json.loads(c) for c in v.good["context"]] == [{"propensity": 0.5, "page": "home"}]
    assert [(e.line, e.field) for e in v.errors] == [(3, "propensity"), (4, "propensity")]
    assert "got '2'" in v.errors[0].message
    typed = validate_events(events(propensity=[[0.5]]), settings)
    assert "got 'List(Float64)'" in only_error(typed).message


def test_propensity_survives_the_sqlite_store_as_a_float(mem_store: SQLiteStore) -> None:
    third = 1 / 3
    df = events(type=["impression"] * 2, item_id=["i1", "i2"], propensity=["0.25", str(third)])
    assert import_frame(mem_store, "interactions", df, strict=True).written == 2
    loaded = mem_store.events().sort("item_id")
    assert [json.loads(c) for c in loaded["context"]] == [
        {"propensity": 0.25},
        {"propensity": third},
    ]


def test_strict_import_of_a_bad_propensity_writes_nothing(mem_store: SQLiteStore) -> None:
    df = events(type=["impression"] * 3, propensity=["0.5", "0.5", "1.5"])
    with pytest.raises(ValidationError) as info:
        import_frame(mem_store, "interactions", df, source="log.csv", strict=True)
    assert [(e.line, e.field) for e in info.value.errors] == [(3, "propensity")]  # rows from 1
    assert "(0, 1]" in str(info.value) and "'1.5'" in str(info.value)
    assert mem_store.stats()["events"] == 0


# -- users -----------------------------------------------------------------------------------------
def test_users_keep_attributes_and_parse_age() -> None:
    df = pl.DataFrame(
        {"user_id": ["0042", "u2", "u3"], "age": ["34", None, "51.5"], "country": ["NO", "SE", ""]}
    )
    v = validate_users(df)
    assert v.n_bad == 0
    assert v.good.to_dicts() == [
        {"user_id": "0042", "age": 34.0, "country": "NO"},
        {"user_id": "u2", "age": None, "country": "SE"},
        {"user_id": "u3", "age": 51.5, "country": ""},
    ]


@pytest.mark.parametrize("age", ["-1", "131", "old", "nan"])
def test_bad_age_is_reported(age: str) -> None:
    v = validate_users(pl.DataFrame({"user_id": ["u1", "u2"], "age": ["30", age]}), "users.csv")
    err = only_error(v)
    assert (err.field, err.line, err.source) == ("age", 3, "users.csv")
    assert "from 0 to 130" in err.message and f"'{age}'" in err.message
    assert v.good["user_id"].to_list() == ["u1"]


def test_users_need_a_user_id() -> None:
    v = validate_users(pl.DataFrame({"user_id": ["u1", "", None]}))
    assert [(e.line, e.field) for e in v.errors] == [(3, "user_id"), (4, "user_id")]
    with pytest.raises(ValidationError, match="'user_id' is required"):
        validate_users(pl.DataFrame({"cookie": ["u1"]}))


def test_a_user_repeated_in_one_batch_keeps_the_last_row() -> None:
    v = validate_users(pl.DataFrame({"user_id": ["u1", "u2", "u1"], "country": ["NO", "SE", "DK"]}))
    assert v.good.to_dicts() == [
        {"user_id": "u2", "country": "SE"},
        {"user_id": "u1", "country": "DK"},
    ]


# -- items -----------------------------------------------------------------------------------------
def test_items_parse_created_at_and_keep_attributes() -> None:
    df = pl.DataFrame(
        {
            "topic": ["news", "sport", "tech"],
            "item_id": ["007", "i2", "i3"],
            "created_at": ["2024-03-01T13:00:00+01:00", "1709294400", "2024-03-01"],
        }
    )
    v = validate_items(df)
    assert v.n_bad == 0
    assert v.good.columns == ["item_id", "created_at", "topic"]
    assert v.good["created_at"].dtype == pl.Datetime("us", "UTC")
    assert v.good["created_at"].to_list() == [NOON, NOON, NOON - timedelta(hours=12)]
    assert v.good["item_id"].to_list() == ["007", "i2", "i3"]


def test_bad_items_are_reported() -> None:
    df = pl.DataFrame(
        {"item_id": ["a", "", "c", "d"], "created_at": ["2024-03-01", "2024-03-01", "soon", None]}
    )
    v = validate_items(df, "items.csv")
    assert [(e.line, e.field) for e in v.errors] == [(3, "item_id"), (4, "created_at")]
    assert "'soon'" in v.errors[1].message
    # Changed on purpose: a missing creation time is unknown, not an error (and not invented).
    assert v.good["item_id"].to_list() == ["a", "d"]
    assert v.good["created_at"].to_list() == [NOON - timedelta(hours=12), None]


def test_items_without_created_at_are_accepted_with_it_unknown() -> None:
    # Changed on purpose: the column is optional; it was required before.
    v = validate_items(pl.DataFrame({"item_id": ["a", "b"], "topic": ["news", "sport"]}))
    assert v.n_bad == 0
    assert v.good.columns == ["item_id", "created_at", "topic"]
    assert v.good["created_at"].dtype == pl.Datetime("us", "UTC")
    assert v.good["created_at"].to_list() == [None, None]
