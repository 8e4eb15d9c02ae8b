"""Storage health: stalled calls and recent failures, judged in real seconds."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError, ServiceRequestError

from shared.clock import ManualClock, ScaledClock
from shared.storage_health import FAILURE_MEMORY_SECONDS, STALL_SECONDS, StorageHealth


async def test_a_call_outstanding_past_the_stall_bound_turns_storage_not_ok() -> None:
    clock = ManualClock()
    health = StorageHealth(clock)
    async with health.call("summary"):
        clock.advance(STALL_SECONDS * 0.9)
        assert health.ok
        clock.advance(STALL_SECONDS * 0.2)
        assert not health.ok and health.stalled
    assert health.ok


async def test_a_failed_call_counts_until_the_same_kind_succeeds_or_the_failure_is_old() -> None:
    clock = ManualClock()
    health = StorageHealth(clock)
    with pytest.raises(ServiceRequestError):
        async with health.call("pulse"):
            raise ServiceRequestError("unreachable")
    async with health.call("summary"):
        pass
    assert health.failing == ("pulse",)  # another kind's success says nothing about writes
    async with health.call("pulse"):
        pass
    assert health.ok
    with pytest.raises(ServiceRequestError):
        async with health.call("report"):
            raise ServiceRequestError("unreachable")
    clock.advance(FAILURE_MEMORY_SECONDS + 1)
    assert health.ok  # a kind that is not called again does not keep the flag down forever


async def test_throttling_is_counted_and_thresholds_are_real_seconds() -> None:
    clock = ScaledClock(30.0)  # 30 clock seconds pass in one real second
    health = StorageHealth(clock)
    error = HttpResponseError(message="ServerBusy")
    error.status_code = 503
    with pytest.raises(HttpResponseError):
        async with health.call("pulse"):
            raise error
    assert health.describe()["throttled"] == 1 and not health.ok
    assert health.describe()["failing"] == ["pulse"]
