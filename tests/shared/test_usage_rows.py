"""Usage rows: Int64 totals, injective keys, batches that a refused row cannot hold back."""

from __future__ import annotations

from datetime import date

from azure.data.tables import EdmType

from shared import usage_rows
from shared.ledger import TokenUsage, UsageRecord
from shared.usage_rows import MAX_REFUSALS, UsageRows


def test_rows_read_back_exactly_whatever_the_names() -> None:
    key = ("2026-12-01", "app|a/b#?%", "gpt-4o|x")
    entity = usage_rows.entity("web-1.ab", key, (2**40, 3, 5))
    assert entity["prompt"].edm_type == EdmType.INT64
    assert "/" not in entity["RowKey"] and entity["RowKey"].count("|") == 3
    row = {**entity, "prompt": entity["prompt"].value}
    assert usage_rows.read(row) == ("web-1.ab", key, UsageRecord(2**40, 3, 5))
    _, parameters = usage_rows.day_range(date(2026, 12, 1), date(2026, 12, 1))
    assert parameters["low"] <= entity["RowKey"] < parameters["high"]


def test_only_changed_records_are_written_in_batches_of_at_most_a_hundred() -> None:
    rows = UsageRows("w")
    records = {("2026-12-01", f"c{i}", "d"): UsageRecord(i, 0, 1) for i in range(250)}
    batches = rows.batches(records)
    assert [len(b) for b in batches] == [100, 100, 50]
    for batch in batches:
        rows.written(batch)
    assert rows.batches(records) == []
    records[("2026-12-01", "c7", "d")].add(TokenUsage(1, 1))
    assert rows.pending(records) == 1


def test_a_refused_batch_splits_and_a_row_refused_alone_is_given_up() -> None:
    rows = UsageRows("w")
    records = {("d", "good", "x"): UsageRecord(1, 0, 1), ("d", "bad", "x"): UsageRecord(1, 0, 1)}
    (batch,) = rows.batches(records)
    rows.refused(batch, "400")
    alone = rows.batches(records)
    assert sorted(len(b) for b in alone) == [1, 1]
    for _ in range(MAX_REFUSALS):
        for single in rows.batches(records):
            if single[0][0][1] == "bad":
                rows.refused(single, "400")
            else:
                rows.written(single)
    assert rows.batches(records) == [] and rows.abandoned == 1
