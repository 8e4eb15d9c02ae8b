"""A meter in front of Azurite: counts every Table Storage call and every entity, by partition, and
answers 503 Server Busy past configured rates, as the real service does past its scalability targets.

Azurite has no throttling and no per-partition counters; this reverse proxy on loopback adds both, so
the benchmark and the tests count storage work the way Azure bills and throttles it:
- a transaction is one HTTP call (a query page, a batch, a point operation);
- entities are what a call carries: the rows a query page returns, the operations a batch holds, one
  for a point operation.
Throttling is judged over the last second: while a partition has carried more than its limit of
entities, or the account more than its limit of transactions, new calls to it get 503 ServerBusy.

    python -m dev.table_meter --upstream http://127.0.0.1:10002 [--partition-limit N] [--account-limit N]
prints {"meter": URL} once listening; GET /_meter returns the counts, POST /_meter/reset zeroes them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import aiohttp
from aiohttp import web
from yarl import URL

_KEY_IN_PATH = re.compile(r"\(PartitionKey='((?:[^']|'')*)'")
_KEY_IN_FILTER = re.compile(r"PartitionKey eq '((?:[^']|'')*)'")
_KEY_IN_BODY = re.compile(r'"PartitionKey"\s*:\s*"([^"]*)"')
_BATCH_OPERATION = re.compile(rb"^(?:POST|PUT|PATCH|MERGE|DELETE|GET) https?://", re.MULTILINE)
_BUSY = {"odata.error": {"code": "ServerBusy", "message": {"lang": "en-US", "value": "The server is busy."}}}
_HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}


@dataclass(frozen=True)
class Call:
    """What one request is, for counting: its partition ("" when it names none) and whether it writes."""

    partition: str
    writes: bool
    operations: int  # entities a write carries; a read's are known from its answer


def classify(method: str, path: str, query: str, body: bytes) -> Call:
    """The partition and size of a Table Storage request, from its method, path, query string and body."""
    path, query = unquote(path), unquote(query)
    if path.endswith("/$batch"):
        text = body.decode("utf-8", "replace")
        match = _KEY_IN_PATH.search(text) or _KEY_IN_BODY.search(text)
        return Call(match.group(1) if match else "", True, len(_BATCH_OPERATION.findall(body)))
    if method == "GET":
        match = _KEY_IN_FILTER.search(query) or _KEY_IN_PATH.search(path)
        return Call(match.group(1).replace("''", "'") if match else "", False, 0)
    match = _KEY_IN_PATH.search(path) or _KEY_IN_BODY.search(body.decode("utf-8", "replace"))
    is_table_call = path.rstrip("/").endswith("/Tables") or "/Tables(" in path
    return Call(match.group(1) if match else "", True, 0 if is_table_call else 1)


def returned(body: bytes) -> int:
    """Entities in a query's answer."""
    try:
        answer = json.loads(body)
    except ValueError:
        return 0
    if isinstance(answer, dict) and isinstance(answer.get("value"), list):
        return len(answer["value"])
    return 1 if isinstance(answer, dict) and "PartitionKey" in answer else 0


@dataclass
class Counts:
    transactions: int = 0
    throttled: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)  # "read" / "write" transactions
    entities_read: Counter[str] = field(default_factory=Counter)  # partition -> entities
    entities_written: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)

    def report(self) -> dict[str, Any]:
        return {
            "seconds": time.monotonic() - self.started,
            "transactions": self.transactions,
            "throttled": self.throttled,
            "by_kind": dict(self.by_kind),
            "entities_read": dict(self.entities_read),
            "entities_written": dict(self.entities_written),
        }


class Throttle:
    """Entities per partition and transactions for the account over the last second, against limits."""

    def __init__(
        self, partition_limit: float | None, account_limit: float | None, now: Callable[[], float] = time.monotonic
    ) -> None:
        self.partition_limit = partition_limit
        self.account_limit = account_limit
        self._now = now
        self._events: deque[tuple[float, str, int]] = deque()  # (time, partition, entities)
        self._partition: Counter[str] = Counter()
        self._transactions = 0

    def _expire(self) -> None:
        horizon = self._now() - 1.0
        while self._events and self._events[0][0] <= horizon:
            _, partition, entities = self._events.popleft()
            self._partition[partition] -= entities
            self._transactions -= 1

    def busy(self, partition: str) -> bool:
        self._expire()
        if self.account_limit is not None and self._transactions >= self.account_limit:
            return True
        return self.partition_limit is not None and self._partition[partition] >= self.partition_limit

    def record(self, partition: str, entities: int) -> None:
        self._events.append((self._now(), partition, entities))
        self._partition[partition] += entities
        self._transactions += 1


class TableMeter:
    def __init__(self, upstream: str, throttle: Throttle | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.throttle = throttle or Throttle(None, None)
        self.counts = Counts()
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self, port: int = 0) -> str:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_get("/_meter", self._report)
        app.router.add_post("/_meter/reset", self._reset)
        app.router.add_route("*", "/{tail:.*}", self._proxy)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{bound}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _report(self, request: web.Request) -> web.Response:
        return web.json_response(self.counts.report())

    async def _reset(self, request: web.Request) -> web.Response:
        self.counts = Counts()
        return web.json_response({})

    async def _proxy(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        body = await request.read()
        path, _, query = request.raw_path.partition("?")
        call = classify(request.method, path, query, body)
        if self.throttle.busy(call.partition):
            self.counts.throttled += 1
            return web.json_response(_BUSY, status=503)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        async with self._session.request(
            request.method, URL(self.upstream + request.raw_path, encoded=True), headers=headers, data=body or None
        ) as answer:
            payload = await answer.read()
            entities = call.operations if call.writes else returned(payload)
            self.counts.transactions += 1
            self.counts.by_kind["write" if call.writes else "read"] += 1
            (self.counts.entities_written if call.writes else self.counts.entities_read)[call.partition] += entities
            self.throttle.record(call.partition, entities)
            out = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_HEADERS}
            return web.Response(status=answer.status, headers=out, body=payload)


async def _serve(args: argparse.Namespace) -> None:
    meter = TableMeter(args.upstream, Throttle(args.partition_limit, args.account_limit))
    url = await meter.start(args.port)
    print(json.dumps({"meter": url}), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await meter.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", required=True, help="Azurite's table endpoint, e.g. http://127.0.0.1:10002")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--partition-limit", type=float, default=None, help="entities per second per partition")
    parser.add_argument("--account-limit", type=float, default=None, help="transactions per second")
    asyncio.run(_serve(parser.parse_args()))


if __name__ == "__main__":
    main()
