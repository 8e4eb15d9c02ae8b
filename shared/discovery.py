"""Affinity that heals: an object the gateway has no record of (expired, lost with storage, created before
the gateway was put in front) is looked for in every resource at once, with a GET that costs no tokens;
the one that answers is recorded and the request goes on. 404 only when every resource said it has
none; when one could not answer (down, 5xx, 429), 503 naming it: a 404 then might be wrong.

Bounded, so that unknown ids cannot turn into N upstream calls each: a short negative cache per id, and
a per-client budget of lookups (a token bucket, shared by every Entra application acting as the client).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from shared import routes
from shared.auth import Caller
from shared.clock import Clock
from shared.cluster import Host
from shared.errors import GatewayError
from shared.inbound import Inbound
from shared.outgoing import Outgoing
from shared.record import RequestRecord

# The api-version a lookup on the classic surface uses when the request carries none (a v1 request).
LOOKUP_API_VERSION = "2025-04-01-preview"
_MAX_TRACKED = 10_000

Ask = Callable[[Host, Inbound, RequestRecord], Awaitable[tuple[Outgoing | None, str]]]


class Discovery:
    def __init__(
        self,
        resources: Callable[[], tuple[Host, ...]],
        ask: Ask,
        clock: Clock,
        *,
        per_minute: int,
        negative_seconds: float,
        retry_after: float,
    ) -> None:
        self._resources = resources
        self._ask = ask
        self._clock = clock
        self._per_minute = per_minute
        self._negative_seconds = negative_seconds
        self._retry_after = retry_after
        self._absent: OrderedDict[tuple[str, str], float] = OrderedDict()  # (kind, id) -> until
        self._budgets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, at)

    async def find(
        self, kind: str, object_id: str, inbound: Inbound, caller: Caller, record: RequestRecord
    ) -> Host | None:
        lookup = _lookup(kind, object_id, inbound)
        if lookup is None:
            return None
        now = self._clock.now()
        until = self._absent.get((kind, object_id))
        if until is not None and until > now:
            return None
        self._spend(caller.name, now)
        hosts = self._resources()
        answers = await asyncio.gather(*(self._ask(host, lookup, record) for host in hosts))
        found = None
        silent: list[str] = []
        for host, (answer, _) in zip(hosts, answers, strict=True):
            if answer is not None and answer.stream is not None:
                await answer.stream.aclose()
            if found is None and answer is not None and answer.status == 200:
                found = host
            elif answer is None or answer.status == 429 or answer.status >= 500:
                silent.append(host.name)
        if found is None and silent:
            raise GatewayError(
                503,
                "RegionUnavailable",
                f"The gateway has no record of {kind} {object_id!r} and could not ask every region for it "
                f"({', '.join(silent)} did not answer); retry after the time in Retry-After.",
                retry_after=self._retry_after,
            )
        if found is None:
            self._absent[(kind, object_id)] = now + self._negative_seconds
            while len(self._absent) > _MAX_TRACKED:
                self._absent.popitem(last=False)
        return found

    def _spend(self, client: str, now: float) -> None:
        tokens, at = self._budgets.pop(client, (float(self._per_minute), now))
        tokens = min(float(self._per_minute), tokens + (now - at) * self._per_minute / 60.0)
        if tokens < 1.0:
            self._budgets[client] = (tokens, now)
            raise GatewayError(
                429,
                "client_rate_limit_exceeded",
                "Too many lookups of object ids the gateway has no record of; retry after the time in Retry-After.",
                retry_after=(1.0 - tokens) * 60.0 / self._per_minute,
            )
        self._budgets[client] = (tokens - 1.0, now)
        while len(self._budgets) > _MAX_TRACKED:
            self._budgets.popitem(last=False)


def _lookup(kind: str, object_id: str, inbound: Inbound) -> Inbound | None:
    """A GET of the object on a surface that serves its kind; None for kinds that cannot be looked up."""
    collection = next((c for c in routes.COLLECTIONS if c.kind == kind), None)
    if collection is None or "GET" not in collection.item:
        return None
    v1 = inbound.route.v1 if len(collection.surfaces) == 2 else routes.V1 in collection.surfaces
    query = [(k, v) for k, v in inbound.query if k == "api-version"]
    if not v1 and not query:
        query = [("api-version", LOOKUP_API_VERSION)]
    prefix = "/openai/v1/" if v1 else "/openai/"
    route = routes.match("GET", f"{prefix}{collection.segment}/{object_id}")
    headers = {k: v for k, v in inbound.headers.items() if k in ("user-agent", "x-ms-client-request-id")}
    return Inbound(route, query, headers, b"", None, None, 0, 0, False, False)
