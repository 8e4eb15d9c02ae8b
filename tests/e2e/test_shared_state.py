"""Several gateway instances, one view of load and health, through Table Storage (Azurite)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.data.tables import TableClient

from dev import load
from dev.azurite import Azurite
from dev.stack import CHAT, RegionSpec, Stack
from shared.storage import as_int
from tests.e2e.conftest import TIME_SCALE

MAX_TOKENS = 400
# PTU-style: the first tier is used first and the rest spill over. Every instance must know how much
# of the first tier the others already took, or together they overrun it.
TIERED = (RegionSpec("uksouth", 30_000, priority=1), RegionSpec("eastus", 10_000, 2), RegionSpec("westus", 20_000, 2))


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    with Azurite(tmp_path_factory.mktemp("azurite")) as instance:
        yield instance


def upstream_429s(stack: Stack) -> int:
    return sum(d["throttled_quota"] for r in stack.regions for d in stack.region_stats(r.name)["deployments"].values())


def rate_for(regions: tuple[RegionSpec, ...], fraction: float) -> float:
    return fraction * sum(r.tpm for r in regions) / 60.0 / load.request_cost(MAX_TOKENS)


async def split_load(stack: Stack, rate: float, duration: float, **kwargs: Any) -> load.LoadResult:
    targets = [load.Target(load.gateway_client(url, stack.client_key), CHAT, "gateway") for url in stack.gateway_urls]
    return await load.run_load(
        targets, rate=rate, duration=duration, time_scale=TIME_SCALE, max_tokens=MAX_TOKENS, **kwargs
    )


def views_of_the_first_tier(stack: Stack) -> tuple[list[int], int]:
    """What each instance believes uksouth has used this minute, and what they used in fact, together."""
    hosts = [host(stack.status(i), "uksouth") for i in range(stack.instances)]
    return [h["window_tokens"] for h in hosts], sum(h["own_window_tokens"] for h in hosts)


async def test_two_instances_share_one_view_and_in_memory_ones_over_send(tmp_path: Path, azurite: Azurite) -> None:
    rate = rate_for(TIERED, 0.70)
    # Long answers (8 simulated seconds) keep x-ratelimit hints and cooldowns from hiding the difference.
    slow_answers = ("--per-token", "0.02")
    results = {}
    for mode, table in (("shared", azurite.connection_string), ("in-memory", None)):
        with Stack(
            tmp_path / mode,
            TIERED,
            TIME_SCALE,
            instances=2,
            table_connection_string=table,
            simulator_args=slow_answers,
            # Our window must outlast Azure's by the real delay between our send and its admission; on
            # compressed time with five busy processes on two cores, 0.5 clock s (17 ms) is too little.
            routing={"expiry_margin_seconds": 2.0},
        ) as stack:
            # Provisioned deployments report utilisation instead of x-ratelimit-remaining-*.
            stack.set_faults("uksouth", no_remaining_headers=True)
            result = await split_load(stack, rate, 120.0)
            views, used = views_of_the_first_tier(stack)
            results[mode] = (result, upstream_429s(stack), views, used)
            print(
                f"\n{mode}: clients {dict(result.statuses)}, upstream 429s {results[mode][1]}, "
                f"each instance believes uksouth used {views} of {used} tokens in the window"
            )
    shared, shared_429s, shared_views, shared_used = results["shared"]
    _, alone_429s, alone_views, alone_used = results["in-memory"]
    assert shared.statuses == {200: shared.sent}, shared.errors
    # Near zero: two instances that learn of each other a second late can still both take the last room.
    assert shared_429s <= 0.03 * shared.sent
    # Shared: every instance sees (nearly) all of the first tier's use, so none over-sends.
    assert all(view >= 0.85 * shared_used for view in shared_views)
    # In memory: each sees only its own half and would send the other half again: the over-send.
    assert all(view <= 0.65 * alone_used for view in alone_views)
    assert alone_429s >= shared_429s


def table_totals(connection_string: str) -> int:
    """Real tokens in the usage rows (the conservation ledger), every instance's."""
    with TableClient.from_connection_string(connection_string, "gatewayusage") as table:
        rows = table.query_entities("PartitionKey ge 'u' and PartitionKey lt 'v'")
        return sum(as_int(row["prompt"]) + as_int(row["completion"]) for row in rows)


async def test_storage_outage_loses_no_request_and_no_usage(tmp_path: Path) -> None:
    with Azurite(tmp_path / "azurite") as storage:
        stack = Stack(
            tmp_path / "stack",
            time_scale=TIME_SCALE,
            instances=2,
            table_connection_string=storage.connection_string,
            env={"GATEWAY_LEDGER_FLUSH_SECONDS": "2"},
        )
        with stack:
            outage: dict[str, float] = {}

            async def outage_of_ten_seconds(progress: float) -> None:
                # Must not block: the load keeps its schedule while storage is away.
                if abs(progress - 0.1) < 1e-9:
                    storage.pause()
                    outage["stopped"] = time.monotonic()
                if abs(progress - 0.9) < 1e-9:
                    outage["resumed"] = time.monotonic()
                    storage.resume()

            # 40% of the aggregate for 13 real seconds: storage is stopped for 80% of them (10.4 s).
            duration = 13.0 * TIME_SCALE
            result = await split_load(stack, rate_for(stack.regions, 0.40), duration, during=outage_of_ten_seconds)
            assert outage["resumed"] - outage["stopped"] >= 10.0
            assert result.statuses == {200: result.sent}, result.errors
            assert result.sent > 300
            # The last rows land within a flush interval (2 clock s: 70 ms) once the load ends: poll, bounded.
            for _ in range(50):
                if table_totals(storage.connection_string) == result.tokens_served:
                    break
                await asyncio.sleep(0.1)
            print(f"\nserved {result.tokens_served} tokens; table says {table_totals(storage.connection_string)}")
            assert table_totals(storage.connection_string) == result.tokens_served
            # Every kind of call succeeds again within a backoff or two (bounded poll).
            wait_for(lambda: all(stack.status(i)["ledger"]["storage_ok"] for i in range(2)), 5, "storage_ok stuck")


async def test_table_writes_do_not_grow_with_request_rate(tmp_path: Path, azurite: Azurite) -> None:
    regions = (RegionSpec("eastus", 1_000_000), RegionSpec("westus", 1_000_000))
    counts = []
    for multiplier in (1, 10):
        with Stack(
            tmp_path / f"x{multiplier}", regions, TIME_SCALE, table_connection_string=azurite.connection_string
        ) as stack:
            before = stack.status()["ledger"]["writes"]
            result = await split_load(stack, 1.0 * multiplier, 60.0 * 3)
            assert result.statuses == {200: result.sent}, result.errors[:5]
            counts.append((result.sent, stack.status()["ledger"]["writes"] - before))
    (slow_requests, slow_writes), (fast_requests, fast_writes) = counts
    print(f"\n{slow_requests} requests -> {slow_writes} table writes; {fast_requests} requests -> {fast_writes}")
    assert fast_requests == 10 * slow_requests
    assert slow_writes > 0
    assert fast_writes <= slow_writes * 1.5 + 2


def wait_for(condition: Any, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(message)


def host(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(h for h in report["deployments"][CHAT] if h["name"] == name)


def test_timer_probe_marks_a_host_down_and_up_for_every_instance(tmp_path: Path, azurite: Azurite) -> None:
    # Only instance 0 runs the probe (as Azure runs a timer on one instance); instance 1 learns from the table.
    stack = Stack(
        tmp_path,
        time_scale=TIME_SCALE,
        instances=2,
        table_connection_string=azurite.connection_string,
        instance_env=[{"HEALTH_PROBE_SCHEDULE": "*/1 * * * * *"}, {"HEALTH_PROBE_SCHEDULE": "0 0 0 1 1 *"}],
        env={"GATEWAY_HEALTH_CACHE_SECONDS": "15"},
    )
    with stack:

        def probe_healthy(index: int) -> bool | None:
            probe = host(stack.status(index), "westus")["probe"]
            return None if probe is None else probe["healthy"]

        wait_for(lambda: probe_healthy(1) is True, 10, "instance 1 never saw a probe result")
        stack.set_faults("westus", down=True)
        started = time.monotonic()
        wait_for(lambda: probe_healthy(0) is False, 3, "the probe did not mark westus down within its interval")
        wait_for(lambda: probe_healthy(1) is False, 5, "instance 1 did not learn westus is down")
        print(f"\nwestus marked down after {time.monotonic() - started:.1f}s")
        report = host(stack.status(1), "westus")
        assert not report["available"] and "unreachable" in report["probe"]["reason"]
        client = load.gateway_client(stack.gateway_urls[1], stack.client_key)
        backends = asyncio.run(_backends(client, 30))
        assert "westus" not in backends and backends

        stack.set_faults("westus", down=False)
        wait_for(lambda: probe_healthy(1) is True, 5, "westus did not come back")
        backends = asyncio.run(_backends(load.gateway_client(stack.gateway_urls[1], stack.client_key), 60))
        assert "westus" in backends


async def _backends(client: Any, count: int) -> set[str]:
    seen = set()
    for _ in range(count):
        raw = await client.chat.completions.with_raw_response.create(
            model=CHAT, messages=[{"role": "user", "content": "hi"}], max_tokens=5
        )
        seen.add(raw.headers["x-gateway-backend"])
    await client.close()
    return seen


def test_status_reports_usage_without_secrets(tmp_path: Path, azurite: Azurite) -> None:
    with Stack(tmp_path, time_scale=TIME_SCALE, table_connection_string=azurite.connection_string) as stack:
        report = stack.status()
        assert report["ledger"]["kind"] == "table"
        assert stack.client_key not in json.dumps(report)
        assert azurite.connection_string.split("AccountKey=")[1].split(";")[0] not in json.dumps(report)


def test_status_says_storage_is_failing_within_two_seconds(tmp_path: Path) -> None:
    with (
        Azurite(tmp_path / "azurite") as storage,
        Stack(tmp_path / "stack", time_scale=TIME_SCALE, table_connection_string=storage.connection_string) as stack,
    ):
        wait_for(lambda: stack.status()["ledger"]["warm"] and stack.status()["ledger"]["storage_ok"], 10, "never ok")
        storage.pause()  # hangs every call until the SDK's 10 s timeout
        stopped = time.monotonic()
        try:
            wait_for(lambda: not stack.status()["ledger"]["storage_ok"], 2.0, "storage still 'ok' 2 s after it stopped")
            print(f"\nstorage_ok false {time.monotonic() - stopped:.2f} s after Azurite stopped")
        finally:
            storage.resume()
        wait_for(lambda: stack.status()["ledger"]["storage_ok"], 20, "storage_ok did not come back")
