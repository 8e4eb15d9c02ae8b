"""NCRONTAB (six fields, seconds first) parsing and the next firing time."""

from __future__ import annotations

from datetime import datetime

import pytest

from dev.ncrontab import next_after, parse


def nxt(expression: str, moment: datetime) -> datetime:
    return next_after(parse(expression), moment)


def test_every_30_seconds() -> None:
    schedule = parse("*/30 * * * * *")
    assert schedule[0] == {0, 30}
    assert schedule[1] == frozenset(range(60))
    assert next_after(schedule, datetime(2024, 1, 1, 12, 0, 10)) == datetime(2024, 1, 1, 12, 0, 30)
    # strictly after: a moment on the schedule moves to the next one
    assert next_after(schedule, datetime(2024, 1, 1, 12, 0, 30)) == datetime(2024, 1, 1, 12, 1, 0)
    assert next_after(schedule, datetime(2024, 1, 1, 12, 0, 29, 999_999)) == datetime(2024, 1, 1, 12, 0, 30)


def test_every_five_minutes() -> None:
    assert nxt("0 */5 * * * *", datetime(2024, 1, 1, 12, 3, 20)) == datetime(2024, 1, 1, 12, 5, 0)
    assert nxt("0 */5 * * * *", datetime(2024, 1, 1, 23, 55, 0)) == datetime(2024, 1, 2, 0, 0, 0)


def test_weekdays_at_nine() -> None:
    # 2024-01-05 is a Friday, 2024-01-08 a Monday.
    assert nxt("0 0 9 * * 1-5", datetime(2024, 1, 5, 8, 0)) == datetime(2024, 1, 5, 9, 0)
    assert nxt("0 0 9 * * 1-5", datetime(2024, 1, 5, 10, 0)) == datetime(2024, 1, 8, 9, 0)
    assert nxt("0 0 9 * * 1-5", datetime(2024, 1, 6, 8, 0)) == datetime(2024, 1, 8, 9, 0)


def test_day_of_week_zero_is_sunday() -> None:
    assert nxt("0 0 9 * * 0", datetime(2024, 1, 6, 10, 0)) == datetime(2024, 1, 7, 9, 0)  # Saturday -> Sunday
    assert nxt("0 0 9 * * 6", datetime(2024, 1, 6, 8, 0)) == datetime(2024, 1, 6, 9, 0)  # 6 is Saturday


def test_lists_ranges_and_steps() -> None:
    assert parse("0,15,45 * * * * *")[0] == {0, 15, 45}
    assert parse("0-30/10 * * * * *")[0] == {0, 10, 20, 30}
    assert parse("5/20 * * * * *")[0] == {5, 25, 45}  # a start with a step runs to the end of the range
    assert parse("0 0 8,20 * * *")[2] == {8, 20}
    assert parse("0 0 0 * 1,3 *")[4] == {1, 3}
    assert nxt("0 0 8,20 * * *", datetime(2024, 3, 1, 9, 0)) == datetime(2024, 3, 1, 20, 0)
    assert nxt("0 0 0 * 1,3 *", datetime(2024, 2, 28, 12)) == datetime(2024, 3, 1)  # Feb 29 skipped


@pytest.mark.parametrize(
    "expression",
    [
        "",
        "* * * * *",  # five fields: classic cron, not NCRONTAB
        "* * * * * * *",
        "60 * * * * *",
        "* 60 * * * *",
        "* * 24 * * *",
        "* * * 0 * *",
        "* * * * 13 *",
        "* * * * * 7",
        "*/0 * * * * *",
        "30-10 * * * * *",
        "a * * * * *",
        "1,,2 * * * * *",
    ],
)
def test_invalid_expressions_raise(expression: str) -> None:
    with pytest.raises(ValueError):
        parse(expression)
