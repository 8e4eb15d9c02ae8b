"""Lists that span regions: every resource is asked, the pages merge into one (listing.py), and only the
caller's own objects are shown (ownership.py).

A page is filled up to `limit` with items the caller may see, fetching further pages from the regions
as needed; `has_more` says whether one more visible item exists. `after=<id>` continues where that
page ended: from this instance's memory of the page when it has one, else rebuilt from the item
itself (its region and `created_at`), so any instance serves the next page. A list missing a region
would look like lost objects, so a region that cannot answer fails the whole list with a 503 naming it.
Hosts cooling down are asked all the same: a list costs no tokens.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from shared import listing, references, routes, usage
from shared.affinity import AffinityStore, AffinityUnavailable
from shared.auth import Caller
from shared.cluster import Host
from shared.dispatch import Dispatcher
from shared.errors import GatewayError
from shared.inbound import Inbound
from shared.listing import Query, Stream
from shared.outgoing import BACKEND_HEADER, Outgoing
from shared.placement import Placement
from shared.record import RequestRecord
from shared.routes import Route

MAX_FETCHES = 40  # region pages one merged page may read (filtering and resuming need more than one each)
MAX_CURSORS = 10_000
CursorKey = tuple[str, str, str, str, str]  # (owner, collection, filters, order, last id)


class _Exhausted(Exception):
    """The page budget ran out before the page could be finished honestly."""


class _Refused(Exception):
    """The regions refused the list (the client's own mistake, a bad filter): their answer goes back as it is."""

    def __init__(self, answer: Outgoing) -> None:
        self.answer = answer


class Aggregator:
    def __init__(self, dispatcher: Dispatcher, placement: Placement, store: AffinityStore, retry_after: float) -> None:
        self._dispatcher = dispatcher
        self._placement = placement
        self._store = store
        self._retry_after = retry_after
        self._cursors: OrderedDict[CursorKey, list[Stream]] = OrderedDict()

    async def merged(self, inbound: Inbound, caller: Caller, record: RequestRecord) -> Outgoing:
        route = inbound.route
        query = listing.parse_query(route.operation, inbound.query)
        kind = route.kind or ""
        owned = None if caller.admin else await self._owned(caller, kind)
        hosts = self._placement.resources()
        fetcher = _Fetcher(self._dispatcher, inbound, query, hosts, record, self._retry_after)
        try:
            streams = await self._start(query, caller, inbound, hosts, fetcher)
            items, has_more = await _merge(streams, fetcher, query, owned)
        except _Refused as refused:
            return refused.answer
        if items:
            self._remember(_cursor(caller, inbound, query, str(items[-1].get("id"))), streams)
        body = json.dumps(listing.page(items, has_more)).encode()
        names = ",".join(host.name for host in hosts)
        return Outgoing(200, {"content-type": "application/json", BACKEND_HEADER: names}, body=body)

    async def _owned(self, caller: Caller, kind: str) -> set[str]:
        try:
            return await self._store.owned(caller.owner, kind)
        except AffinityUnavailable:
            raise GatewayError(
                503,
                "AffinityUnavailable",
                "The gateway cannot look up which objects are yours right now.",
                retry_after=self._retry_after,
            ) from None

    async def _start(
        self, query: Query, caller: Caller, inbound: Inbound, hosts: Sequence[Host], fetcher: _Fetcher
    ) -> list[Stream]:
        """Every region's position: the start, this instance's memory of the page that ended at `after`, or
        that position rebuilt from the item `after` names."""
        if query.after is None:
            return [Stream(i) for i in range(len(hosts))]
        route = inbound.route
        remembered = self._cursors.get(_cursor(caller, inbound, query, query.after))
        if remembered is not None and len(remembered) == len(hosts):
            return [s.copy() for s in remembered]
        try:
            home = await self._store.get(references.object_key(route.kind or "", query.after))
        except AffinityUnavailable:
            home = None
        home_host = self._placement.host(home.host) if home is not None else None
        anchor_host = next((i for i, h in enumerate(hosts) if home_host and h.endpoint == home_host.endpoint), None)
        visible = home is not None and (caller.admin or home.owner == caller.owner)
        anchor = await fetcher.item(anchor_host, query.after) if anchor_host is not None and visible else None
        if anchor is None or anchor_host is None:
            raise GatewayError(400, "invalid_after", "'after' must be the id of an item of a page you received.")
        streams = []
        for index in range(len(hosts)):
            stream = Stream(index, after=query.after if index == anchor_host else None)
            if index != anchor_host:
                await fetcher.resume(stream, anchor, anchor_host)
            streams.append(stream)
        return streams

    def _remember(self, key: CursorKey, streams: list[Stream]) -> None:
        self._cursors[key] = streams
        while len(self._cursors) > MAX_CURSORS:
            self._cursors.popitem(last=False)


async def _merge(
    streams: list[Stream], fetcher: _Fetcher, query: Query, owned: set[str] | None
) -> tuple[list[dict[str, Any]], bool]:
    """Up to `limit` visible items in merged order, and whether another follows. The streams are left just
    after the last item returned (what was read past it is put back), ready for the next page."""
    items: list[dict[str, Any]] = []
    taken: list[tuple[Stream, dict[str, Any]]] = []  # read since the last item returned
    has_more = False
    try:
        while (stream := await fetcher.next(streams)) is not None:
            item = stream.buffer.popleft()
            taken.append((stream, item))
            if owned is not None and item.get("id") not in owned:
                continue
            if len(items) == query.limit:
                has_more = True  # one more visible item exists: that is all has_more promises
                break
            items.append(item)
            taken = []
    except _Exhausted:
        has_more = True  # could not tell within the budget: say there may be more
    for stream, item in reversed(taken):
        stream.buffer.appendleft(item)
    return items, has_more


class _Fetcher:
    """Region pages for one merged page, within its budget; a region that cannot answer fails the list."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        inbound: Inbound,
        query: Query,
        hosts: Sequence[Host],
        record: RequestRecord,
        retry_after: float,
    ) -> None:
        self._dispatcher = dispatcher
        self._inbound = inbound
        self._query = query
        self._hosts = hosts
        self._record = record
        self._retry_after = retry_after
        self._budget = MAX_FETCHES

    async def next(self, streams: list[Stream]) -> Stream | None:
        """The stream whose head comes next, fetching (at once) the next page of every stream that ran dry."""
        dry = [stream for stream in streams if not stream.buffer and not stream.exhausted]
        pages = await asyncio.gather(*(self._page(stream) for stream in dry), return_exceptions=True)
        for stream, result in zip(dry, pages, strict=True):
            if isinstance(result, BaseException):
                raise result
            stream.take_page(result)
        return listing.best(streams, self._query.order)

    async def resume(self, stream: Stream, anchor: listing.Item, anchor_index: int) -> None:
        while True:
            stream.take_page(await self._page(stream))
            if listing.resume(stream, anchor, anchor_index, self._query.order):
                return

    async def item(self, index: int, object_id: str) -> Mapping[str, Any] | None:
        route = self._inbound.route
        lookup = routes.match("GET", ("/openai/v1/" if route.v1 else "/openai/") + f"{route.operation}/{object_id}")
        answer = await self._ask(index, lookup, [(k, v) for k, v in self._inbound.query if k == "api-version"])
        if answer is None or answer.status != 200:
            return None
        payload = usage.json_or_none(answer.body)
        return payload if isinstance(payload, dict) else None

    async def _page(self, stream: Stream) -> Mapping[str, Any]:
        if self._budget <= 0:
            raise _Exhausted()
        self._budget -= 1
        size = listing.region_page_size(self._inbound.route.operation, self._query)
        params = [(k, v) for k, v in self._inbound.query if k not in ("limit", "after", "order")]
        params += [("limit", str(size)), ("order", self._query.order)]
        if stream.after is not None:
            params.append(("after", stream.after))
        answer = await self._ask(stream.index, self._inbound.route, params)
        host = self._hosts[stream.index]
        if answer is not None and 400 <= answer.status < 500:
            raise _Refused(answer)  # the client's own mistake (say, a bad filter): every region would say the same
        page = listing.parse_page(usage.json_or_none(answer.body)) if answer is not None else None
        if page is None:
            raise GatewayError(
                503,
                "RegionUnavailable",
                f"Cannot list {self._inbound.route.operation} across regions: {host.name} did not answer with a list. "
                "A partial list would look as if objects were gone; retry after the time in Retry-After.",
                retry_after=self._retry_after,
            )
        return page

    async def _ask(self, index: int, route: Route, params: list[tuple[str, str]]) -> Outgoing | None:
        inbound = Inbound(route, params, self._inbound.headers, b"", None, None, 0, 0, False, False)
        answer, _ = await self._dispatcher.ask(self._hosts[index], inbound, self._record)
        if answer is not None and answer.stream is not None:
            await answer.stream.aclose()  # a list never streams: treat it as no answer
            return None
        return answer


def _cursor(caller: Caller, inbound: Inbound, query: Query, last: str) -> CursorKey:
    """Where a page ended, for its next page: of the same list, filters included (`purpose=batch` is another)."""
    filters = sorted((k, v) for k, v in inbound.query if k not in ("limit", "after", "order", "api-version"))
    return (caller.owner, inbound.route.operation, json.dumps(filters), query.order, last)
