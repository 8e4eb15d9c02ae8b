"""Lists that span regions: every resource is asked at once and the pages are merged (listing.py).

A list missing a region would look like lost objects to the client, so a region that cannot answer
fails the whole list with a 503 that names it. Hosts cooling down are asked all the same: a list
costs no tokens, and only an answer tells whether the resource can give one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from shared import listing, usage
from shared.dispatch import Dispatcher
from shared.errors import GatewayError
from shared.inbound import Inbound
from shared.outgoing import BACKEND_HEADER, Outgoing
from shared.placement import Placement
from shared.record import RequestRecord


class Aggregator:
    def __init__(self, dispatcher: Dispatcher, placement: Placement, retry_after: float) -> None:
        self._dispatcher = dispatcher
        self._placement = placement
        self._retry_after = retry_after

    async def list(self, inbound: Inbound, record: RequestRecord) -> Outgoing:
        limit = listing.page_limit(inbound.route.operation, inbound.query)
        resources = self._placement.resources()
        answers = await asyncio.gather(*(self._dispatcher.ask(host, inbound, record) for host in resources))
        pages: list[Mapping[str, Any]] = []
        failed: list[str] = []
        for host, (answer, failure) in zip(resources, answers, strict=True):
            if answer is not None and 400 <= answer.status < 500:
                return answer  # the client's own mistake (say, a bad filter): every region would say the same
            page = (
                listing.parse_page(usage.json_or_none(answer.body))
                if answer is not None and answer.stream is None
                else None
            )
            if page is None:
                if answer is not None and answer.stream is not None:
                    await answer.stream.aclose()
                failed.append(failure or f"{host.name} did not answer with a list")
            else:
                pages.append(page)
        if failed:
            raise GatewayError(
                503,
                "RegionUnavailable",
                f"Cannot list {inbound.route.operation} across regions: {'; '.join(failed)}. A partial list would "
                "look as if objects were gone; retry after the time in Retry-After.",
                retry_after=self._retry_after,
            )
        merged = json.dumps(listing.merge(pages, limit)).encode()
        names = ",".join(host.name for host in resources)
        return Outgoing(200, {"content-type": "application/json", BACKEND_HEADER: names}, body=merged)
