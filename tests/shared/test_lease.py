"""The lease: who may try to take it, and the conditional write that takes it."""

from __future__ import annotations

from azure.core import MatchConditions

from shared.lease import Lease, operation


def test_only_the_holder_or_anyone_after_it_ran_out() -> None:
    lease = Lease("a", until=100.0, etag="e1")
    assert lease.held_by("a", 99.0) and not lease.held_by("a", 100.0)
    assert lease.open_to("a", 150.0, 0.5)  # the holder renews, even late: its ETag says whether it still may
    assert not lease.open_to("b", 100.4, 0.5) and lease.open_to("b", 100.6, 0.5)


def test_taking_is_conditional_on_what_was_seen() -> None:
    kind, _, options = operation(Lease(), "summary", "a", 10.0)
    assert kind == "create" and options == {}  # fails if anybody created it first
    kind, entity, options = operation(Lease("b", 5.0, "etag-b"), "summary", "a", 10.0)
    assert kind == "update" and entity["holder"] == "a"
    assert options["etag"] == "etag-b" and options["match_condition"] == MatchConditions.IfNotModified
