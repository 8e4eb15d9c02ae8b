"""The router: one client request, from authentication to the answer.

It tells the request's story; each step is a module of its own: routes (is it served), auth (who is
calling), inbound (what it asks and what it costs), placement (where it may go), dispatch (the
attempts inside one deadline), aggregation (lists that span regions), relay (the body on its way).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from shared import inbound as inbound_
from shared import routes
from shared.aggregation import Aggregator
from shared.auth import Authenticator
from shared.config import Routing
from shared.dispatch import Admission, Dispatcher
from shared.errors import GatewayError
from shared.outgoing import Outgoing
from shared.placement import Placement
from shared.record import RequestRecord

BodyReader = Callable[[int], Awaitable[bytes]]

_MAX_HEADER_BYTES = 32 * 1024  # what Azure's own front end accepts in all


class Proxy:
    def __init__(
        self,
        *,
        routing: Routing,
        authenticator: Authenticator,
        placement: Placement,
        dispatcher: Dispatcher,
        aggregator: Aggregator,
    ) -> None:
        self._routing = routing
        self._auth = authenticator
        self._placement = placement
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
                return await self._aggregator.list(request, record)
            plan = await self._placement.plan(request)
            return await self._dispatcher.dispatch(request, plan, Admission(caller.name), record)
        except GatewayError as exc:
            record.error = exc.code
            return Outgoing.error(exc)
