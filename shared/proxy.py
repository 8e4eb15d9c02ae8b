"""The router: one client request, from authentication to the answer.

It tells the request's story; each step is a module of its own: routes (is it served), auth (who is
calling), inbound (what it asks and what it costs), client_limits (may this client send it now),
placement (where it may go; whose objects it names), discovery (finding an object nobody recorded),
dispatch (the attempts inside one deadline), aggregation (lists that span regions).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from shared import inbound as inbound_
from shared import ownership, routes
from shared.aggregation import Aggregator
from shared.auth import Authenticator, Caller
from shared.client_limits import ClientLimits
from shared.config import Routing
from shared.discovery import Discovery
from shared.dispatch import Dispatcher
from shared.errors import GatewayError
from shared.inbound import Inbound
from shared.outgoing import Outgoing
from shared.placement import Placement, Plan, Unrecorded
from shared.record import RequestRecord

BodyReader = Callable[[int], Awaitable[bytes]]

_MAX_HEADER_BYTES = 32 * 1024  # what Azure's own front end accepts in all
_MAX_DISCOVERIES = 8  # objects of one request the gateway will look for


class Proxy:
    def __init__(
        self,
        *,
        routing: Routing,
        authenticator: Authenticator,
        limits: ClientLimits,
        placement: Placement,
        discovery: Discovery,
        dispatcher: Dispatcher,
        aggregator: Aggregator,
    ) -> None:
        self._routing = routing
        self._auth = authenticator
        self._limits = limits
        self._placement = placement
        self._discovery = discovery
        self._dispatcher = dispatcher
        self._aggregator = aggregator

    @property
    def in_flight(self) -> int:
        return self._dispatcher.in_flight

    async def handle(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        headers: Mapping[str, str],
        read_body: BodyReader,
        record: RequestRecord,
    ) -> Outgoing:
        try:
            if sum(len(k) + len(v) for k, v in headers.items()) > _MAX_HEADER_BYTES:
                raise GatewayError(431, "request_header_fields_too_large", "The request headers are too large.")
            route = routes.match(method, path)
            record.operation = route.operation
            caller = await self._auth.authenticate(headers)
            record.client = caller.name
            if self.in_flight >= self._routing.max_in_flight:
                # Envoy-style circuit breaking: a per-instance cap on concurrent upstream requests.
                raise GatewayError(503, "GatewayOverloaded", "The gateway is at its concurrency limit.", retry_after=1)
            raw = await read_body(self._routing.max_body_bytes)
            request = inbound_.parse(route, query, headers, raw, self._routing)
            record.deployment, record.stream = request.logical or "", request.stream
            if route.lists:
                return await self._aggregator.merged(request, caller, record)
            plan = await self._plan(request, caller, record)
            admission = await self._limits.admit(caller, request)
            answer = await self._dispatcher.dispatch(request, plan, admission, record)
            answer.headers.update(self._limits.remaining(caller, request))
            return answer
        except GatewayError as exc:
            record.error = exc.code
            return Outgoing.error(exc)

    async def _plan(self, request: Inbound, caller: Caller, record: RequestRecord) -> Plan:
        """Where the request may go; an object nobody recorded is looked for in every region first."""
        for _ in range(_MAX_DISCOVERIES):
            try:
                return await self._placement.plan(request, caller)
            except Unrecorded as missing:
                host = await self._discovery.find(missing.kind, missing.object_id, request, caller, record)
                if host is None:
                    raise ownership.not_found(missing.kind, missing.object_id) from None
                self._placement.adopt(missing.kind, missing.object_id, host)
        raise GatewayError(400, "too_many_objects", "This request names more unrecorded objects than one request may.")
