"""A gateway assembled from its real parts (ledger, health board, placement, dispatcher, proxy) over a fake
aiohttp-like session on a ManualClock: what the proxy, dispatch and relay tests drive."""

from __future__ import annotations

import inspect
import json
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from starlette.datastructures import Headers

from shared.affinity import MemoryAffinityStore
from shared.auth import Authenticator
from shared.clock import ManualClock
from shared.cluster import Cluster, Host, HostAuth
from shared.config import Client, Routing, Secret
from shared.credentials import CredentialError
from shared.gateway import compose
from shared.health import HealthBoard
from shared.ledger import LocalLedger
from shared.outgoing import Outgoing
from shared.proxy import Proxy
from shared.record import RequestRecord
from shared.telemetry import Telemetry
from shared.upstream import Upstream

CLIENT_KEY = "gw-client-key-0123456789"
UPSTREAM_TOKEN = "upstream-entra-token-abc"
HOST_API_KEY = "uksouth-host-api-key-xyz"
CHAT = "gpt-4o"
API_VERSION = "2024-10-21"

EAST = Host("eastus", "https://east.example.openai.azure.com", "gpt-4o-east", tpm=100_000, rpm=600, priority=1)
WEST = Host("westus", "https://west.example.openai.azure.com", "gpt-4o-west", tpm=100_000, rpm=600, priority=2)
UK = Host(
    "uksouth",
    "https://uk.example.openai.azure.com",
    "gpt-4o-uk",
    tpm=100_000,
    rpm=600,
    priority=3,
    auth=HostAuth("api-key", "GATEWAY_UK_KEY"),
)
HOSTS = (EAST, WEST, UK)
BY_ENDPOINT = {h.endpoint: h for h in HOSTS}
COMPLETION = json.dumps(
    {"choices": [{"message": {"content": "hi"}}], "usage": {"prompt_tokens": 5, "completion_tokens": 3}}
).encode()

# Never upstream, whatever their case: the caller's credentials, cookies, hop-by-hop and forwarding headers.
FORBIDDEN = (
    "api-key",
    "authorization",
    "cookie",
    "host",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "upgrade",
    "proxy-authorization",
    "content-length",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-original-url",
    "x-secret",
)


# --- fakes -------------------------------------------------------------------------------------------------------


class FakeResponse:
    def __init__(
        self,
        status: int,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        content_type: str = "application/json",
        chunks: list[bytes] | None = None,
    ) -> None:
        self.status = status
        self.headers = CIMultiDictProxy(CIMultiDict(headers or {}))
        self.content_type = content_type
        self._pieces = list(chunks) if chunks is not None else ([body] if body else [])
        self.released = False
        self.closed = False
        self.content = SimpleNamespace(readany=self._readany)

    async def _readany(self) -> bytes:
        return self._pieces.pop(0) if self._pieces else b""

    def release(self) -> None:
        self.released = True

    def close(self) -> None:
        self.closed = True
        self.released = True


@dataclass
class Sent:
    method: str
    url: str
    headers: dict[str, str]
    data: bytes
    at: float  # clock time of the call

    @property
    def host(self) -> Host:
        parts = urlsplit(self.url)
        return BY_ENDPOINT[f"{parts.scheme}://{parts.netloc}"]


Answer = FakeResponse | BaseException
Responder = Callable[[Sent], Answer | Awaitable[Answer]]


class FakeSession:
    """`post` is awaitable like aiohttp's; each call is recorded, then answered by `responder`.

    Like aiohttp, it follows redirects unless told `allow_redirects=False`: re-sending the body and every
    header but Authorization (which aiohttp drops when the origin changes) to wherever Location points.
    """

    def __init__(self, clock: ManualClock, responder: Responder) -> None:
        self.clock = clock
        self.responder = responder
        self.sent: list[Sent] = []
        self.responses: list[FakeResponse] = []

    async def request(
        self,
        method: str,
        url: str,
        *,
        data: bytes | None,
        headers: Mapping[str, str],
        timeout: Any,  # noqa: ASYNC109 - aiohttp's signature
        allow_redirects: bool = True,
        **options: Any,
    ) -> FakeResponse:
        assert isinstance(timeout, aiohttp.ClientTimeout)
        headers = dict(headers)
        for _ in range(10):
            sent = Sent(method, url, dict(headers), bytes(data or b""), self.clock.now())
            self.sent.append(sent)
            answer = self.responder(sent)
            if inspect.isawaitable(answer):  # a responder that takes its time (or never answers)
                answer = await answer
            if isinstance(answer, BaseException):
                raise answer
            response = answer
            location = response.headers.get("location")
            if not (allow_redirects and response.status in (301, 302, 303, 307, 308) and location):
                break
            response.release()
            if (response.status == 303 and method != "HEAD") or (response.status in (301, 302) and method == "POST"):
                method, data = "GET", None
            target = urljoin(url, location)
            if urlsplit(target)[:2] != urlsplit(url)[:2]:
                headers.pop("authorization", None)
            url = target
        self.responses.append(response)
        return response

    async def post(self, url: str, **options: Any) -> FakeResponse:
        return await self.request("POST", url, **options)


class FakeTokens:
    def __init__(self) -> None:
        self.calls = 0
        self.failing = False

    async def token(self) -> str:
        self.calls += 1
        if self.failing:
            raise CredentialError("could not get an Entra ID token: ClientAuthenticationError")
        return UPSTREAM_TOKEN

    async def close(self) -> None:
        return None


def ok(sent: Sent) -> FakeResponse:
    return FakeResponse(200, {"x-ratelimit-remaining-tokens": "90000", "x-ms-region": sent.host.name}, COMPLETION)


def by_host(answers: Mapping[str, Answer | Callable[[Sent], Answer]]) -> Responder:
    """Answer per host name; a host not listed answers 200."""

    def respond(sent: Sent) -> Answer:
        answer = answers.get(sent.host.name, ok)
        return answer(sent) if callable(answer) and not isinstance(answer, BaseException) else answer

    return respond


@dataclass
class Rig:
    proxy: Proxy
    session: FakeSession
    clock: ManualClock
    ledger: LocalLedger
    health: HealthBoard
    tokens: FakeTokens
    affinity: MemoryAffinityStore

    def headroom(self, host: Host) -> tuple[float, float]:
        return self.ledger.headroom(host.key, host.tpm, host.rpm)


def make_rig(
    responder: Responder = ok,
    hosts: tuple[Host, ...] = HOSTS,
    seed: int = 7,
    clients: tuple[Client, ...] = (Client("app", (Secret(CLIENT_KEY),)),),
    telemetry: Telemetry | None = None,
    **routing: Any,
) -> Rig:
    clock = ManualClock(1000.0)
    ledger = LocalLedger(clock)
    affinity = MemoryAffinityStore(clock)
    health = HealthBoard(clock)
    session = FakeSession(clock, responder)
    tokens = FakeTokens()
    settings = Routing(**routing)
    upstream = Upstream(session, tokens, {UK.key: Secret(HOST_API_KEY)}, clock, settings)  # type: ignore[arg-type]
    authenticator = Authenticator(clients)
    proxy = compose(
        Cluster({CHAT: hosts}),
        settings,
        authenticator,
        ledger,
        health,
        affinity,
        upstream,
        clock,
        random.Random(seed),
        telemetry or Telemetry(),
    )
    return Rig(proxy, session, clock, ledger, health, tokens, affinity)


def wire_headers(pairs: list[tuple[str, str]]) -> Headers:
    """Headers as the HTTP server hands them to the gateway (starlette: lower-cased names, latin-1 values)."""
    return Headers(raw=[(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in pairs])


def presents_the_client_key(headers: Headers) -> bool:
    """The rule callers are told: a gateway key in api-key, else as a bearer token (what v1 SDK clients send)."""
    key = headers.get("api-key")
    if key:
        return key == CLIENT_KEY
    scheme, _, credential = headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and credential.strip() == CLIENT_KEY


def body(**extra: Any) -> bytes:
    return json.dumps({"messages": [{"role": "user", "content": "hello"}], "max_tokens": 10, **extra}).encode()


async def call(
    rig: Rig,
    path: str = f"/openai/deployments/{CHAT}/chat/completions",
    headers: list[tuple[str, str]] | None = None,
    payload: bytes | None = None,
    query: list[tuple[str, str]] | None = None,
    method: str = "POST",
    record: RequestRecord | None = None,
) -> Outgoing:
    raw = body() if payload is None else payload

    async def read_body(limit: int) -> bytes:
        return raw

    pairs = headers if headers is not None else [("api-key", CLIENT_KEY), ("content-type", "application/json")]
    return await rig.proxy.handle(
        method,
        path,
        query if query is not None else [("api-version", API_VERSION)],
        wire_headers(pairs),
        read_body,
        record or RequestRecord(method, path),
    )


def error_of(outgoing: Outgoing) -> dict[str, Any]:
    assert outgoing.headers["content-type"] == "application/json"
    error: dict[str, Any] = json.loads(outgoing.body)["error"]
    assert set(error) == {"code", "message", "type"}
    return error
