"""GET /usage: real usage per client x deployment x UTC day, as JSON or CSV, for admin clients.

Read from the shared ledger's records (Table Storage when configured: every instance's usage), so the
numbers are what was served through the gateway: prompt and completion tokens and requests.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from datetime import date, timedelta

from shared.errors import GatewayError
from shared.ledger import UsageKey, UsageRecord

MAX_DAYS = 366
COLUMNS = ("day", "client", "deployment", "prompt_tokens", "completion_tokens", "total_tokens", "requests")


def period(params: Mapping[str, str], today: date) -> tuple[date, date]:
    """`from` and `to` (inclusive, YYYY-MM-DD); either defaults to today."""
    try:
        first = date.fromisoformat(params["from"]) if "from" in params else today
        last = date.fromisoformat(params["to"]) if "to" in params else today
    except ValueError:
        raise GatewayError(400, "invalid_date", "'from' and 'to' must be dates as YYYY-MM-DD.") from None
    if last < first:
        raise GatewayError(400, "invalid_date", "'to' must not be before 'from'.")
    if last - first > timedelta(days=MAX_DAYS - 1):
        raise GatewayError(400, "invalid_date", f"Ask for at most {MAX_DAYS} days at a time.")
    return first, last


def rows(report: Mapping[UsageKey, UsageRecord]) -> list[dict[str, str | int]]:
    return [
        {
            "day": day,
            "client": client,
            "deployment": deployment,
            "prompt_tokens": record.prompt,
            "completion_tokens": record.completion,
            "total_tokens": record.tokens,
            "requests": record.requests,
        }
        for (day, client, deployment), record in sorted(report.items())
    ]


def as_json(first: date, last: date, data: list[dict[str, str | int]]) -> bytes:
    return json.dumps({"object": "list", "from": first.isoformat(), "to": last.isoformat(), "data": data}).encode()


def as_csv(data: list[dict[str, str | int]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(data)
    return out.getvalue().encode()
