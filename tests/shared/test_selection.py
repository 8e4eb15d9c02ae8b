"""Selector: a request judged by its own size, the pick or the wait within the budget, and the error when no host
can serve."""

from __future__ import annotations

import json
import random

import pytest

from shared import inbound as inbound_module
from shared import routes
from shared.clock import ManualClock
from shared.cluster import Host
from shared.config import Routing
from shared.errors import GatewayError
from shared.health import HealthBoard, ProbeResult
from shared.inbound import Inbound
from shared.ledger import LocalLedger
from shared.placement import Plan
from shared.selection import Admission, Attempts, Selector

SMALL = Host("eastus", "https://east.example", "d-east", tpm=1_000, rpm=6)
LARGE = Host("westus", "https://west.example", "d-west", tpm=10_000, rpm=60)
PLAN = Plan((SMALL, LARGE), deployment="gpt-4o")


def chat(max_tokens: int) -> Inbound:
    route = routes.match("POST", "/openai/deployments/gpt-4o/chat/completions")
    raw = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens}).encode()
    return inbound_module.parse(route, [], {"content-type": "application/json"}, raw, Routing())


def make(**routing: float) -> tuple[Selector, HealthBoard, ManualClock]:
    clock = ManualClock(100.0)
    health = HealthBoard(clock)
    selector = Selector(
        routing=Routing(**routing), ledger=LocalLedger(clock), health=health, clock=clock, rng=random.Random(3)
    )
    return selector, health, clock


def test_a_request_larger_than_every_host_is_a_400_naming_its_estimate_and_the_largest_limit() -> None:
    selector, _, _ = make()
    selector.check_size(chat(5_000), PLAN)  # fits the large host: fine
    with pytest.raises(GatewayError) as caught:
        selector.check_size(chat(20_000), PLAN)
    error = caught.value
    assert (error.status, error.code) == (400, "request_too_large")
    assert str(chat(20_000).cost) in error.message and "(10000)" in error.message


async def test_a_request_goes_only_to_hosts_it_fits() -> None:
    selector, _, _ = make()
    for _ in range(20):
        host = await selector.choose(PLAN, chat(2_000), Admission("app"), Attempts(), 100.0, 200.0)
        assert host == LARGE


async def test_it_waits_within_the_budget_for_a_cooldown_to_end_then_picks() -> None:
    selector, health, clock = make(wait_budget_seconds=5.0)
    health.cool_down(LARGE.key, 3.0, "request limit")
    host = await selector.choose(PLAN, chat(2_000), Admission("app"), Attempts(), clock.now(), clock.now() + 60)
    assert host == LARGE and clock.now() == pytest.approx(103.0)


async def test_past_the_budget_it_is_a_429_with_the_time_to_recovery() -> None:
    selector, health, clock = make(wait_budget_seconds=2.0)
    health.cool_down(LARGE.key, 30.0, "request limit")
    with pytest.raises(GatewayError) as caught:
        await selector.choose(PLAN, chat(2_000), Admission("app"), Attempts(), clock.now(), clock.now() + 60)
    assert caught.value.status == 429 and caught.value.retry_after == pytest.approx(30.0)
    assert clock.now() == 100.0  # no point waiting for what cannot come within the budget


def test_the_error_says_whose_fault_it_is() -> None:
    selector, health, _ = make()
    request, admission = chat(10), Admission("app")
    assert selector.exhausted(PLAN, request, admission, Attempts(credential="no token")).status == 503
    assert selector.exhausted(PLAN, request, admission, Attempts(failure="westus: 500")).status == 502
    for host in PLAN.hosts:
        health.eject(host.key, "refused")
    unhealthy = selector.exhausted(PLAN, request, admission, Attempts())
    assert (unhealthy.status, unhealthy.code) == (503, "ServiceUnavailable")  # failing, not full: not a 429
    assert unhealthy.retry_after == pytest.approx(10.0)  # the first ejection's length
    health.cool_down(SMALL.key, 5.0, "request limit")
    saturated = selector.exhausted(PLAN, request, admission, Attempts(saw_429=True))
    assert (saturated.status, saturated.retry_after) == (429, pytest.approx(10.0))
    home = Plan((LARGE,), deployment="gpt-4o", home="file 'file-1' lives in region westus")
    moved = selector.exhausted(home, request, admission, Attempts(failure="westus: 500"))
    assert (moved.status, moved.code) == (503, "RegionUnavailable") and "westus" in moved.message


async def test_panic_mode_is_noted_for_the_deployment_when_most_of_its_quota_fails_its_probe() -> None:
    selector, health, _ = make()
    health.set_probe(LARGE.key, ProbeResult(False, "answered 500", 1.0, 0.0))
    await selector.choose(PLAN, chat(10), Admission("app"), Attempts(), 100.0, 200.0)
    assert "gpt-4o" in health.panic()  # the failing host holds 10,000 of 11,000 tokens of quota


class CountingClock(ManualClock):
    def __init__(self, start: float) -> None:
        super().__init__(start)
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if len(self.sleeps) > 1000:
            raise AssertionError("spinning")
        await super().sleep(seconds)


async def test_a_low_priority_request_held_back_by_the_request_reserve_waits_it_does_not_spin() -> None:
    """Free requests between 1 and 1 + the reserve: the windows say "room now", the reserve says no."""
    clock = CountingClock(100.0)
    ledger = LocalLedger(clock)
    selector = Selector(
        routing=Routing(wait_budget_seconds=2.0),
        ledger=ledger,
        health=HealthBoard(clock),
        clock=clock,
        rng=random.Random(1),
    )
    host = Host("eastus", "https://east.example", "d", tpm=100_000, rpm=60)  # 10 requests per 10 s window
    for _ in range(8):
        ledger.reserve((host.key,), 10, prompt=5, client="app", deployment="gpt-4o")
    low = Admission("batchy", reserve=0.3)  # leaves 3 requests of the window free
    with pytest.raises(GatewayError) as caught:
        await selector.choose(Plan((host,), "gpt-4o"), chat(10), low, Attempts(), clock.now(), clock.now() + 60)
    assert caught.value.status == 429
    assert clock.sleeps and min(clock.sleeps) > 0 and len(clock.sleeps) <= 5


async def test_a_session_does_not_let_a_low_priority_request_into_the_reserve() -> None:
    selector, _, clock = make(wait_budget_seconds=0.0)
    selector.ledger.reserve((LARGE.key,), 9_500, prompt=10, client="app", deployment="gpt-4o")  # 95% used
    plan = Plan((LARGE,), "gpt-4o", preferred=LARGE)
    low = Admission("batchy", reserve=0.2)
    with pytest.raises(GatewayError):
        await selector.choose(plan, chat(10), low, Attempts(), clock.now(), clock.now() + 60)
    assert await selector.choose(plan, chat(10), Admission("app"), Attempts(), clock.now(), clock.now() + 60) == LARGE
