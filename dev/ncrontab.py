"""NCRONTAB, the six-field schedule of Azure Functions timers: second minute hour day month day-of-week."""

from __future__ import annotations

from datetime import datetime, timedelta

_RANGES = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6))


def parse(expression: str) -> tuple[frozenset[int], ...]:
    fields = expression.split()
    if len(fields) != 6:
        raise ValueError(f"NCRONTAB needs six fields (second minute hour day month day-of-week): {expression!r}")
    return tuple(_field(text, low, high) for text, (low, high) in zip(fields, _RANGES, strict=True))


def _field(text: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        span, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if span == "*":
            start, end = low, high
        elif "-" in span:
            first, last = span.split("-", 1)
            start, end = int(first), int(last)
        else:
            start = int(span)
            end = high if step_text else start
        if not (low <= start <= end <= high) or step < 1:
            raise ValueError(f"NCRONTAB field {text!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


def next_after(schedule: tuple[frozenset[int], ...], moment: datetime) -> datetime:
    """The first whole second strictly after `moment` that the schedule matches."""
    second, minute, hour, day, month, weekday = schedule
    candidate = moment.replace(microsecond=0) + timedelta(seconds=1)
    for _ in range(366 * 24 * 3600):
        if (
            candidate.second in second
            and candidate.minute in minute
            and candidate.hour in hour
            and candidate.day in day
            and candidate.month in month
            and (candidate.weekday() + 1) % 7 in weekday  # NCRONTAB: 0 is Sunday
        ):
            return candidate
        candidate += timedelta(seconds=1)
    raise ValueError("schedule never fires")
