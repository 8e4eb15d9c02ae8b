"""Client limits: each application's budget, held in the shared ledger so that every instance enforces it.

- `tpm` / `rpm`: sliding windows like Azure's (tokens per minute, requests as rpm/6 per 10 s), charged
  with the same cost estimate and true-up as the hosts, under the keys `client:<name>` (and
  `client:<name>:<deployment>` for per-deployment limits). A request that does not fit waits within
  the wait budget, then gets 429 `client_rate_limit_exceeded` with the time it would fit.
- `tokens_per_day`: real usage (streams exactly) per UTC day; once spent, 403 `quota_exceeded` with
  Retry-After until the day turns (as Azure API Management's token-limit policy does).
- `priority: "low"`: such requests leave `routing.low_priority_reserve` of each deployment's quota, plus
  the normal demand on its way (priority.py), free for the others (selection.py), so under pressure they
  wait and get the 429s first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from shared.auth import Caller
from shared.clock import Clock
from shared.config import Limits, Routing
from shared.errors import GatewayError
from shared.inbound import Inbound
from shared.ledger import Ledger, seconds_to_next_day
from shared.selection import Admission
from shared.telemetry import Telemetry

REMAINING_TOKENS = "x-gateway-client-remaining-tokens"
REMAINING_REQUESTS = "x-gateway-client-remaining-requests"
_UNLIMITED = 2**62  # a window with only one of tpm / rpm set: the other never binds


@dataclass(frozen=True)
class Window:
    key: str
    tpm: int
    rpm: int


def windows(caller: Caller, deployment: str) -> list[Window]:
    client = caller.client
    if client is None:
        return []
    found = []
    for key, limits in (
        (f"client:{client.name}", client.limits),
        (f"client:{client.name}:{deployment}", client.deployment_limits.get(deployment)),
    ):
        if limits is not None and (limits.tpm is not None or limits.rpm is not None):
            found.append(Window(key, limits.tpm or _UNLIMITED, limits.rpm or _UNLIMITED))
    return found


class ClientLimits:
    def __init__(self, ledger: Ledger, routing: Routing, clock: Clock, telemetry: Telemetry) -> None:
        self._ledger = ledger
        self._routing = routing
        self._clock = clock
        self._telemetry = telemetry

    async def admit(self, caller: Caller, inbound: Inbound) -> Admission:
        """Wait (within the budget) until the caller's limits let this request go, or refuse it."""
        start = self._clock.now()
        client = caller.client
        if client is None or not inbound.metered:
            return Admission(caller.name, since=start)
        reserve = self._routing.low_priority_reserve if client.priority == "low" else 0.0
        if not client.limited:
            return Admission(caller.name, (), reserve, start)
        deployment = inbound.logical or ""
        self._check_day(caller.name, client.limits, None)
        self._check_day(caller.name, client.deployment_limits.get(deployment), deployment)
        limited = windows(caller, deployment)
        for window in limited:
            if inbound.cost > window.tpm:
                raise GatewayError(
                    400,
                    "request_too_large",
                    f"This request is estimated at {inbound.cost} tokens, more than client {caller.name!r} may use in "
                    f"a minute ({window.tpm}): it could never be admitted. Lower max_tokens or shorten the prompt.",
                )
        while True:
            wait = max((self._wait(window, inbound.cost) for window in limited), default=0.0)
            if wait == 0.0:
                break
            budget_left = start + self._routing.wait_budget_seconds - self._clock.now()
            if wait > budget_left:
                self._telemetry.rejected(caller.name, "rate_limit")
                raise GatewayError(
                    429,
                    "client_rate_limit_exceeded",
                    f"Client {caller.name!r} is at its rate limit; retry after the time in Retry-After.",
                    retry_after=min(wait, self._routing.max_retry_after_seconds),
                )
            await self._clock.sleep(wait)
        return Admission(caller.name, tuple(w.key for w in limited), reserve, start)

    def _check_day(self, name: str, limits: Limits | None, deployment: str | None) -> None:
        if limits is None or limits.tokens_per_day is None:
            return
        used = self._ledger.day_tokens(name, deployment)
        if used >= limits.tokens_per_day:
            self._telemetry.rejected(name, "daily_quota")
            scope = f" on {deployment!r}" if deployment else ""
            raise GatewayError(
                403,
                "quota_exceeded",
                f"Client {name!r} has used its {limits.tokens_per_day} tokens for today{scope}; the quota renews at "
                "midnight UTC (see Retry-After).",
                retry_after=seconds_to_next_day(self._clock.wall()),
            )

    def _wait(self, window: Window, cost: int) -> float:
        free_tokens, free_requests = self._ledger.headroom(window.key, window.tpm, window.rpm)
        if free_tokens >= cost and free_requests >= 1:
            return 0.0
        wait = self._ledger.seconds_until(window.key, cost, window.tpm, window.rpm)
        return wait if wait > 0 else 0.01  # only the shared view binds: look again shortly

    def remaining(self, caller: Caller, inbound: Inbound) -> dict[str, str]:
        """What the caller may still send this minute, for the answer's headers (clients with limits only)."""
        client = caller.client
        if client is None or not client.limited or not inbound.metered:
            return {}
        limited = windows(caller, inbound.logical or "")
        if not limited:
            return {}
        tokens = requests = math.inf
        for window in limited:
            free_tokens, free_requests = self._ledger.headroom(window.key, window.tpm, window.rpm)
            if window.tpm != _UNLIMITED:
                tokens = min(tokens, free_tokens)
            if window.rpm != _UNLIMITED:
                requests = min(requests, free_requests)
        headers = {}
        if tokens != math.inf:
            headers[REMAINING_TOKENS] = str(max(0, math.floor(tokens)))
        if requests != math.inf:
            headers[REMAINING_REQUESTS] = str(max(0, math.floor(requests)))
        return headers
