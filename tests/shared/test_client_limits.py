"""client_limits: what a client's policy adds to a request, and the shortcut for clients without limits."""

from __future__ import annotations

import json

import pytest

from shared import inbound, routes
from shared.auth import Caller
from shared.client_limits import REMAINING_REQUESTS, REMAINING_TOKENS, ClientLimits
from shared.clock import ManualClock
from shared.config import Client, Limits, Routing
from shared.ledger import LocalLedger
from shared.telemetry import Telemetry

ROUTING = Routing(low_priority_reserve=0.25)


def chat() -> inbound.Inbound:
    route = routes.match("POST", "/openai/deployments/gpt-4o/chat/completions")
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}).encode()
    return inbound.parse(route, [], {"content-type": "application/json"}, body, ROUTING)


def limits() -> ClientLimits:
    clock = ManualClock(100.0)
    return ClientLimits(LocalLedger(clock), ROUTING, clock, Telemetry())


@pytest.mark.parametrize(
    ("client", "windows", "reserve", "remaining"),
    [
        (Client("plain"), (), 0.0, set()),
        (Client("low", priority="low"), (), 0.25, set()),
        (Client("tpm", limits=Limits(tpm=1000)), ("client:tpm",), 0.0, {REMAINING_TOKENS}),
        (Client("daily", limits=Limits(tokens_per_day=10_000)), (), 0.0, set()),
        (
            Client("per-deployment", deployment_limits={"gpt-4o": Limits(rpm=60)}, priority="low"),
            ("client:per-deployment:gpt-4o",),
            0.25,
            {REMAINING_REQUESTS},
        ),
        (Client("elsewhere", deployment_limits={"other": Limits(tpm=5)}), (), 0.0, set()),
    ],
)
async def test_what_a_clients_policy_adds(
    client: Client, windows: tuple[str, ...], reserve: float, remaining: set[str]
) -> None:
    policy = limits()
    caller = Caller(client.name, "key", client.name, client)
    admission = await policy.admit(caller, chat())
    assert (admission.client, admission.windows, admission.reserve, admission.since) == (
        client.name,
        windows,
        reserve,
        100.0,
    )
    assert set(policy.remaining(caller, chat())) == remaining


def test_a_client_is_limited_by_any_limit_it_has() -> None:
    assert not Client("plain").limited
    assert not Client("empty", limits=Limits(), deployment_limits={"gpt-4o": Limits()}).limited
    assert Client("daily", limits=Limits(tokens_per_day=1)).limited
    assert Client("one", deployment_limits={"gpt-4o": Limits(tpm=1)}).limited
