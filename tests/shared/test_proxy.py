"""Proxy.handle driven directly: a fake aiohttp-like session, the real ledger, health board and authenticator.

What must hold whatever a client sends: the upstream URL is a configured endpoint plus a whitelisted
operation path, the client's credentials and hop-by-hop headers never go upstream, and the gateway's
own credential always does. Then the retry rules: 429 -> another host and a cooldown, 401/403 -> ejection
naming the missing role, connection errors -> another host with the reservation released.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from dataclasses import replace
from types import SimpleNamespace
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.datastructures import Headers

from shared.affinity import Home
from shared.cluster import Host
from shared.outgoing import BACKEND_HEADER, Outgoing
from shared.references import object_key
from shared.routes import DEPLOYMENT_OPERATIONS, OPERATIONS, valid_object_id
from tests.shared.rig import (
    API_VERSION,
    CHAT,
    CLIENT_KEY,
    COMPLETION,
    EAST,
    FORBIDDEN,
    HOST_API_KEY,
    HOSTS,
    UK,
    UPSTREAM_TOKEN,
    WEST,
    FakeResponse,
    Sent,
    body,
    by_host,
    call,
    error_of,
    make_rig,
    ok,
    presents_the_client_key,
    wire_headers,
)

# --- (a) whatever the client sends, the upstream request is ours -------------------------------------------------

KNOWN_RESPONSE = "resp_known123"  # a Response the affinity store says lives on eastus
OBJECT_PATH = f"/openai/v1/responses/{KNOWN_RESPONSE}"
UNKNOWN_PATH = "/openai/v1/responses/resp_unknown"  # no record: looked for in every resource with a GET
ALLOWED_UPSTREAM_PATHS = {
    host.key: {f"/openai/deployments/{host.deployment}/{op}" for op in DEPLOYMENT_OPERATIONS}
    | {f"/openai/v1/{op}" for op in OPERATIONS}
    | {OBJECT_PATH, UNKNOWN_PATH}
    for host in HOSTS
}
TRICKS = [
    "..",
    "%2f",
    "%2F",
    "%2e%2e",
    "//",
    "@",
    "\\",
    "\r\n",
    "\n",
    "\t",
    " ",
    "?x=1",
    "#frag",
    "http://evil.example",
    "https://evil.example/openai/",
    "evil.example",
    ":443",
    "é",
    "\u2215",
    "\uff0f",
    "\x00",
]
POST_PATHS = [f"/openai/deployments/{CHAT}/{op}" for op in sorted(DEPLOYMENT_OPERATIONS)] + [
    f"/openai/v1/{op}" for op in sorted(OPERATIONS)
]
VALID_PATHS = [*POST_PATHS, OBJECT_PATH, UNKNOWN_PATH]


@st.composite
def paths(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["valid", "valid", "valid", "spliced", "prefixed", "text", "absolute"]))
    if kind == "valid":
        return draw(st.sampled_from(VALID_PATHS))
    if kind == "text":
        return draw(st.text(max_size=60))
    base = draw(st.sampled_from(VALID_PATHS))
    trick = draw(st.sampled_from(TRICKS) | st.text(min_size=1, max_size=8))
    if kind == "absolute":
        return draw(st.sampled_from(["http://evil.example", "https://evil.example:8443", "//evil.example"])) + base
    if kind == "prefixed":
        return trick + base
    at = draw(st.integers(0, len(base)))
    return base[:at] + trick + base[at:]


_TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!#$%&'*+^`|~"
forbidden_names = st.sampled_from(FORBIDDEN).flatmap(lambda n: st.sampled_from([n, n.upper(), n.title()]))
header_names = st.one_of(
    forbidden_names,
    forbidden_names,
    st.sampled_from(["x-session-id", "x-ms-client-request-id", "user-agent", "openai-beta", "accept"]),
    st.text(alphabet=_TOKEN_CHARS, min_size=1, max_size=20),
)
# What an HTTP server can hand over: latin-1, no CR/LF/NUL.
header_values = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=40
)
credentials = st.sampled_from(
    [
        [("api-key", CLIENT_KEY)],
        [("authorization", f"Bearer {CLIENT_KEY}")],
        [("Api-Key", CLIENT_KEY), ("authorization", "Bearer someone-elses-token")],
        [("api-key", "wrong")],
        [],
    ]
)
queries = st.lists(st.tuples(st.text(max_size=10), st.text(max_size=20)), max_size=4).map(
    lambda q: [("api-version", API_VERSION), *q]
)


def must_be_served(method: str, path: str, headers: Headers, v1_model: str) -> bool:
    """A request every rule allows: authenticated, a served operation and method, a known model or object."""
    if not presents_the_client_key(headers):
        return False
    if path == OBJECT_PATH:  # pinned to the Response's home: an x-session-id is not looked at
        return method in ("GET", "DELETE")
    session = headers.get("x-session-id")
    if session is not None and not valid_object_id(session):
        return False
    return method == "POST" and path in POST_PATHS and (not path.startswith("/openai/v1/") or v1_model == CHAT)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    path=paths(),
    odd_method=st.none() | st.none() | st.none() | st.sampled_from(["GET", "DELETE", "PUT", "POST", "PATCH"]),
    extra=st.lists(st.tuples(header_names, header_values), max_size=8),
    creds=credentials,
    query=queries,
    v1_model=st.sampled_from([CHAT, "other", "../x"]),
    order=st.permutations(HOSTS),
)
def test_upstream_url_and_headers_are_the_gateways_whatever_the_client_sends(
    path: str,
    odd_method: str | None,
    extra: list[tuple[str, str]],
    creds: list[tuple[str, str]],
    query: list[tuple[str, str]],
    v1_model: str,
    order: list[Host],
) -> None:
    # Mostly the path's own method (GET for an object, POST for an operation), sometimes any other.
    method = odd_method or ("GET" if path.startswith("/openai/v1/responses/") else "POST")
    # Whichever host is preferred (so api-key and Entra hosts are both exercised as the first choice).
    rig = make_rig(hosts=tuple(replace(host, priority=i + 1) for i, host in enumerate(order)))
    headers = [*creds, ("content-type", "application/json"), *extra]

    async def scenario() -> Outgoing:
        rig.affinity.put(object_key("response", KNOWN_RESPONSE), Home(EAST.key, "app"), 3600)
        payload = b"" if method in ("GET", "DELETE") else body(model=v1_model)
        return await call(rig, path, headers, payload, query, method=method)

    outgoing = asyncio.run(scenario())

    # An id with no record (any but KNOWN_RESPONSE) is looked for in every resource with a GET of the same path.
    looked_up = (
        method in ("GET", "DELETE")
        and re.fullmatch(r"/openai/v1/responses/[A-Za-z0-9_-]{1,128}", path) is not None
        and path != OBJECT_PATH
        and presents_the_client_key(wire_headers(headers))
    )
    for sent in rig.session.sent:
        host = sent.host  # KeyError if the URL names no configured endpoint
        assert sent.url.startswith(host.endpoint + "/openai/")
        assert sent.method == ("GET" if looked_up else method)
        parts = urlsplit(sent.url)
        assert parts.path in ALLOWED_UPSTREAM_PATHS[host.key] or (looked_up and parts.path == path), sent.url
        assert parts.fragment == "" and parts.username is None and parts.password is None
        expected = [q for q in query if q[0] == "api-version"] if looked_up else query  # a lookup asks only for it
        assert parse_qsl(parts.query, keep_blank_values=True) == expected
        names = set(sent.headers)
        assert all(name == name.lower() for name in names)
        allowed = {"content-type", "accept", "user-agent", "x-ms-client-request-id", "openai-beta", "accept-encoding"}
        if host.auth.type == "api-key":
            assert sent.headers["api-key"] == HOST_API_KEY
            assert names - allowed == {"api-key"}
        else:
            assert sent.headers["authorization"] == f"Bearer {UPSTREAM_TOKEN}"
            assert names - allowed == {"authorization"}
        for name in FORBIDDEN:
            if name not in ("api-key", "authorization"):
                assert name not in names
        assert all(CLIENT_KEY not in value for value in sent.headers.values())
        assert CLIENT_KEY not in sent.url
    if looked_up:
        # Found (the fake answers everything), but nobody recorded whose it is: only an admin may reach it.
        assert len({s.host for s in rig.session.sent}) == len(rig.session.sent) == len(HOSTS)
        assert outgoing.status == 404 and error_of(outgoing)["code"] == "not_found"
        return
    served = must_be_served(method, path, wire_headers(headers), v1_model)
    if rig.session.sent:
        assert served, f"a request no rule allows went upstream: {method} {path!r}"
        assert outgoing.status == 200 and outgoing.headers[BACKEND_HEADER] == rig.session.sent[-1].host.name
    else:
        assert not served, f"an allowed request was not forwarded: {outgoing.status} {outgoing.body!r}"
        assert outgoing.status in (400, 401, 404, 405), outgoing
        error_of(outgoing)


async def test_connection_nominated_and_credential_headers_stay_here() -> None:
    rig = make_rig()
    headers = [
        ("api-key", CLIENT_KEY),
        ("authorization", "Bearer caller-token"),
        ("cookie", "session=abc"),
        ("connection", "x-secret, keep-alive"),
        ("x-secret", "1"),
        ("keep-alive", "timeout=5"),
        ("host", "evil.example"),
        ("x-forwarded-for", "10.0.0.1"),
        ("x-forwarded-host", "evil.example"),
        ("content-type", "application/json"),
        ("user-agent", "AzureOpenAI/Python 1.0"),
        ("x-ms-client-request-id", "req-1"),
        ("accept-encoding", "gzip"),
    ]
    outgoing = await call(rig, headers=headers)
    assert outgoing.status == 200
    [sent] = rig.session.sent
    assert sent.headers == {
        "content-type": "application/json",
        "user-agent": "AzureOpenAI/Python 1.0",
        "x-ms-client-request-id": "req-1",
        "accept-encoding": "identity",
        "authorization": f"Bearer {UPSTREAM_TOKEN}",
    }
    assert sent.host is EAST and rig.tokens.calls == 1


async def test_api_key_host_gets_its_own_key_and_no_bearer() -> None:
    rig = make_rig(hosts=(UK,))
    outgoing = await call(
        rig, headers=[("authorization", f"Bearer {CLIENT_KEY}"), ("content-type", "application/json")]
    )
    assert outgoing.status == 200
    [sent] = rig.session.sent
    assert sent.headers["api-key"] == HOST_API_KEY
    assert "authorization" not in sent.headers
    assert rig.tokens.calls == 0


# --- (b) 429: another host, a cooldown, never the same host twice -------------------------------------------------


def quota_429(retry_after_ms: int) -> Callable[[Sent], FakeResponse]:
    def respond(sent: Sent) -> FakeResponse:
        return FakeResponse(
            429,
            {"retry-after-ms": str(retry_after_ms), "retry-after": str(-(-retry_after_ms // 1000))},
            b'{"error": {"code": "429", "message": "Requests to the ChatCompletions_Create Operation have exceeded '
            b'token rate limit of your current tier. Please retry after 8 seconds."}}',
        )

    return respond


COST = 2 + 4 + 10  # body(): "hello" is 2 tokens, one message, max_tokens 10


async def test_a_token_429_goes_elsewhere_and_holds_back_only_requests_that_large() -> None:
    rig = make_rig(by_host({"eastus": quota_429(7500)}))
    before = rig.headroom(EAST)
    outgoing = await call(rig)
    assert outgoing.status == 200
    assert [s.host.name for s in rig.session.sent] == ["eastus", "westus"]
    assert outgoing.headers[BACKEND_HEADER] == "westus"
    first = rig.session.sent[0]
    assert rig.health.ready_in(EAST.key, COST) == pytest.approx(first.at + 7.5 - rig.clock.now())
    assert rig.health.ready_in(EAST.key, COST - 1) == 0.0  # a smaller request may fit at once
    assert rig.health.describe(EAST.key)["cooldown_reason"] == ""  # nobody else is cooled down
    assert rig.headroom(EAST) == before  # the 429 was not admitted: its reservation is gone
    assert all(r.released for r in rig.session.responses)
    assert rig.proxy.in_flight == 0


def request_429(sent: Sent) -> FakeResponse:
    return FakeResponse(
        429,
        {"retry-after": "4", "x-ratelimit-reset-requests": "4"},
        b'{"error": {"code": "429", "message": "... have exceeded call rate limit of your current tier."}}',
    )


async def test_a_request_limit_429_closes_the_host_for_everyone_until_the_reset() -> None:
    rig = make_rig(by_host({"eastus": request_429}))
    outgoing = await call(rig)
    assert outgoing.status == 200
    assert [s.host.name for s in rig.session.sent] == ["eastus", "westus"]
    wait = rig.session.sent[0].at + 4 - rig.clock.now()
    assert rig.health.ready_in(EAST.key, 1) == pytest.approx(wait)
    assert rig.health.describe(EAST.key)["cooldown_reason"] == "429 (request_limit)"
    assert rig.health.ready_in(EAST.key, None) == 0.0  # files and reads use no window: not held back


async def test_all_hosts_429_gives_the_client_a_429_with_both_retry_headers() -> None:
    rig = make_rig(by_host({"eastus": quota_429(9000), "westus": quota_429(3000), "uksouth": quota_429(5000)}))
    outgoing = await call(rig)
    names = [s.host.name for s in rig.session.sent]
    assert sorted(names) == ["eastus", "uksouth", "westus"]  # each once
    assert outgoing.status == 429
    assert error_of(outgoing)["type"] == "rate_limit_error"
    soonest = rig.session.sent[names.index("westus")].at + 3.0 - rig.clock.now()
    assert 0 < soonest <= 3.0
    assert int(outgoing.headers["retry-after-ms"]) == pytest.approx(soonest * 1000, abs=1)
    assert outgoing.headers["retry-after"] == "3"


@pytest.mark.parametrize("max_attempts", [1, 2, 3, 10])
async def test_never_the_same_host_twice(max_attempts: int) -> None:
    rig = make_rig(
        lambda sent: FakeResponse(500, {}, b'{"error": {"code": "InternalServerError"}}'), max_attempts=max_attempts
    )
    outgoing = await call(rig)
    names = [s.host.name for s in rig.session.sent]
    assert len(names) == len(set(names)) == min(max_attempts, len(HOSTS))
    assert outgoing.status == 502
    assert error_of(outgoing)["code"] == "BadGateway"


# --- (c) 401/403: the host is ejected with a reason that names the role ----------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
async def test_upstream_refusing_our_credentials_ejects_the_host_and_goes_elsewhere(status: int) -> None:
    refused = FakeResponse(status, {}, b'{"error": {"code": "PermissionDenied", "message": "no"}}')
    rig = make_rig(by_host({"eastus": refused}))
    outgoing = await call(rig)
    assert outgoing.status == 200 and outgoing.headers[BACKEND_HEADER] == "westus"
    assert [s.host.name for s in rig.session.sent] == ["eastus", "westus"]
    described = rig.health.describe(EAST.key)
    assert described["available"] is False
    assert "Cognitive Services OpenAI User" in described["ejection_reason"]
    assert f"upstream {status}" in described["ejection_reason"]
    # The next request does not try the ejected host first.
    await call(rig)
    assert rig.session.sent[-1].host.name == "westus" and len(rig.session.sent) == 3


# --- (d) connection errors: another host, reservation released -------------------------------------------------


def refused() -> aiohttp.ClientConnectorError:
    return aiohttp.ClientConnectorError(SimpleNamespace(host="h", port=443, ssl=True), OSError(111, "refused"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "error",
    [refused(), aiohttp.ConnectionTimeoutError("connect timed out")],
    ids=["refused", "connect-timeout"],
)
async def test_a_host_never_reached_is_retried_elsewhere_and_its_reservation_released(error: BaseException) -> None:
    rig = make_rig(by_host({"eastus": error}))
    before = rig.headroom(EAST)
    outgoing = await call(rig)
    assert outgoing.status == 200 and outgoing.headers[BACKEND_HEADER] == "westus"
    assert [s.host.name for s in rig.session.sent] == ["eastus", "westus"]
    assert rig.headroom(EAST) == before
    assert rig.ledger.window_tokens(EAST.key) == 0
    assert rig.ledger.window_tokens(WEST.key) > 0
    assert rig.health.describe(EAST.key)["consecutive_failures"] == 1
    assert rig.proxy.in_flight == 0


@pytest.mark.parametrize(
    "error",
    [aiohttp.ServerDisconnectedError(), aiohttp.ClientOSError(104, "reset"), TimeoutError()],
    ids=["server-disconnected", "reset", "no-headers-in-time"],
)
async def test_a_generation_that_may_have_run_is_retried_but_stays_charged(error: BaseException) -> None:
    rig = make_rig(by_host({"eastus": error}))
    outgoing = await call(rig)
    assert outgoing.status == 200 and outgoing.headers[BACKEND_HEADER] == "westus"
    assert rig.ledger.window_tokens(EAST.key) == COST  # Azure admitted it, so it counts in the window there
    assert rig.proxy.in_flight == 0


async def test_every_host_unreachable_is_502_and_every_reservation_released() -> None:
    rig = make_rig(lambda sent: refused())
    outgoing = await call(rig)
    assert outgoing.status == 502 and error_of(outgoing)["code"] == "BadGateway"
    assert all(rig.ledger.window_tokens(h.key) == 0 for h in HOSTS)
    assert rig.proxy.in_flight == 0


# --- (e) a 400 from the model passes through as it is ----------------------------------------------------------


async def test_upstream_400_passes_through_with_its_body_and_is_not_retried() -> None:
    payload = (
        b'{"error": {"code": "content_filter", "message": "The response was filtered", "param": "prompt", '
        b'"status": 400}}'
    )
    rig = make_rig(by_host({"eastus": FakeResponse(400, {"x-ms-region": "eastus"}, payload)}))
    before = rig.headroom(EAST)
    outgoing = await call(rig)
    assert outgoing.status == 400
    assert outgoing.body == payload
    assert outgoing.headers[BACKEND_HEADER] == "eastus"
    assert len(rig.session.sent) == 1
    assert rig.headroom(EAST) == before  # not run, not charged
    assert rig.health.describe(EAST.key)["consecutive_failures"] == 0
    assert rig.health.available(EAST.key)


# --- redirects: the upstream URL is ours, whatever an upstream answers ----------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_an_upstream_redirect_is_neither_followed_nor_handed_to_the_client(status: int) -> None:
    """A 3xx must not send the prompt and the host's api key elsewhere, nor the client (the openai SDK follows
    redirects, re-sending its own api-key header) to wherever Location points: it is a failed attempt."""
    evil = "https://evil.example/steal"

    def respond(sent: Sent) -> FakeResponse:
        if sent.url.startswith(evil):
            return FakeResponse(200, {}, b'{"choices": [{"message": {"content": "from evil"}}]}')
        if sent.url.startswith(UK.endpoint):
            return FakeResponse(status, {"location": evil}, b"")
        return ok(sent)

    rig = make_rig(respond, hosts=(replace(UK, priority=1), replace(EAST, priority=2)))
    outgoing = await call(rig)
    configured = tuple(h.endpoint + "/" for h in HOSTS)
    assert [s.url for s in rig.session.sent if not s.url.startswith(configured)] == []
    assert all(HOST_API_KEY not in json.dumps(s.headers) for s in rig.session.sent if not s.url.startswith(UK.endpoint))
    assert "location" not in outgoing.headers
    assert outgoing.status == 200 and outgoing.headers[BACKEND_HEADER] == "eastus"


# --- (f) response headers ----------------------------------------------------------------------------------------


async def test_response_headers_drop_hop_by_hop_and_cookies_and_name_the_backend() -> None:
    upstream = FakeResponse(
        200,
        {
            "Connection": "keep-alive",
            "Keep-Alive": "timeout=5",
            "Transfer-Encoding": "chunked",
            "Content-Length": "999",
            "Set-Cookie": "ARRAffinity=abc; Path=/",
            "Date": "Tue, 01 Dec 2026 10:00:00 GMT",
            "Server": "upstream/1.0",
            "Proxy-Authenticate": "Basic",
            "Upgrade": "h2c",
            "Trailer": "x-foo",
            "TE": "trailers",
            "X-Gateway-Backend": "spoofed",
            "x-ratelimit-remaining-tokens": "12345",
            "x-ratelimit-remaining-requests": "42",
            "x-ms-region": "East US",
            "apim-request-id": "abc-123",
            "Content-Type": "application/json",
        },
        COMPLETION,
    )
    rig = make_rig(by_host({"eastus": upstream}))
    outgoing = await call(rig)
    assert outgoing.status == 200 and outgoing.body == COMPLETION
    assert outgoing.headers == {
        BACKEND_HEADER: "eastus",
        "x-ratelimit-remaining-tokens": "12345",
        "x-ratelimit-remaining-requests": "42",
        "x-ms-region": "East US",
        "apim-request-id": "abc-123",
        "content-type": "application/json",
    }


async def test_response_headers_named_in_connection_are_dropped_too() -> None:
    """RFC 9110 7.6.1: a proxy must remove every header its upstream nominated in Connection."""
    upstream = FakeResponse(
        200, {"Connection": "keep-alive, X-Internal-Route", "X-Internal-Route": "backend-7;secret"}, COMPLETION
    )
    rig = make_rig(by_host({"eastus": upstream}))
    outgoing = await call(rig)
    assert outgoing.status == 200
    assert "x-internal-route" not in outgoing.headers


async def test_streamed_response_headers_are_filtered_the_same_way() -> None:
    events = [b'data: {"choices": [{"delta": {"content": "hi"}}]}\n\n', b"data: [DONE]\n\n"]
    upstream = FakeResponse(
        200,
        {"Content-Type": "text/event-stream", "Set-Cookie": "a=b", "Transfer-Encoding": "chunked", "x-ms-region": "e"},
        content_type="text/event-stream",
        chunks=events,
    )
    rig = make_rig(by_host({"eastus": upstream}))
    outgoing = await call(rig, payload=body(stream=True))
    assert outgoing.stream is not None
    assert outgoing.headers == {"content-type": "text/event-stream", "x-ms-region": "e", BACKEND_HEADER: "eastus"}
    streamed = b"".join([chunk async for chunk in outgoing.stream])
    assert streamed == b"".join(events)
    assert rig.proxy.in_flight == 0 and upstream.released


async def test_oversized_headers_are_refused_before_anything_is_sent() -> None:
    rig = make_rig()
    padding = [(f"x-pad-{i}", "p" * 1000) for i in range(40)]
    outgoing = await call(rig, headers=[("api-key", CLIENT_KEY), ("content-type", "application/json"), *padding])
    assert outgoing.status == 431
    assert error_of(outgoing)["code"] == "request_header_fields_too_large"
    assert rig.session.sent == []


async def test_a_credential_in_the_query_and_long_header_values_stay_here() -> None:
    rig = make_rig()
    outgoing = await call(
        rig,
        query=[("api-version", API_VERSION), ("api-key", CLIENT_KEY)],
        headers=[("api-key", CLIENT_KEY), ("content-type", "application/json"), ("user-agent", "u" * 5000)],
    )
    assert outgoing.status == 200
    (sent,) = rig.session.sent
    assert CLIENT_KEY not in sent.url and "api-version=" in sent.url
    assert "user-agent" not in {k.lower() for k in sent.headers}


# --- stateful objects: files go home ------------------------------------------------------------------------------

MULTIPART = [("api-key", CLIENT_KEY), ("content-type", "multipart/form-data; boundary=b")]
UPLOAD = b'--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n--b--\r\n'


def stored_file(sent: Sent) -> FakeResponse:
    file = {"id": f"file-{sent.host.name}", "object": "file", "bytes": 3, "status": "processed"}
    return FakeResponse(200, {"x-ms-region": sent.host.name}, json.dumps(file).encode())


async def test_an_upload_goes_to_one_resource_untouched_and_its_file_is_recorded() -> None:
    rig = make_rig(stored_file)
    rig.health.eject(EAST.key, "down", 30)  # the balancer's choice, with no deployment to go by
    rig.health.cool_down(WEST.key, 30, "429 (request_limit)")  # a file uses no window: a cooldown does not matter
    outgoing = await call(rig, "/openai/files", MULTIPART, UPLOAD)
    assert outgoing.status == 200
    (sent,) = rig.session.sent
    host = sent.host
    assert host is not EAST
    assert sent.url == f"{host.endpoint}/openai/files?api-version={API_VERSION}"
    assert sent.data == UPLOAD and sent.headers["content-type"] == MULTIPART[1][1]
    assert await rig.affinity.get(f"file:file-{host.name}") == Home(host.key, "app")  # and whose it is
    assert rig.headroom(host) == (host.tpm, host.rpm / 6)  # no tokens charged, no request counted


def uk_files_only(sent: Sent) -> FakeResponse:
    if sent.host == UK:
        return stored_file(sent)
    return FakeResponse(404, {}, b'{"error": {"code": "not_found", "message": "No file found."}}')


async def test_a_request_naming_a_file_goes_home_or_nowhere() -> None:
    rig = make_rig(uk_files_only)
    rig.affinity.put(object_key("file", "file-uk"), Home(UK.key, "app"), 3600)
    for method, path in [("GET", "/openai/files/file-uk"), ("GET", "/openai/files/file-uk/content")]:
        outgoing = await call(rig, path, payload=b"", method=method)
        assert outgoing.status == 200 and outgoing.headers[BACKEND_HEADER] == "uksouth"
        assert rig.session.sent[-1].url == f"{UK.endpoint}{path}?api-version={API_VERSION}"
    sent = len(rig.session.sent)
    unknown = await call(rig, "/openai/files/file-nope", payload=b"", method="DELETE")
    assert unknown.status == 404
    assert error_of(unknown) == {
        "code": "not_found",
        "message": "No file found with id 'file-nope'.",
        "type": "invalid_request_error",
    }
    # No record: every resource was asked with a GET (no tokens), none has it.
    lookups = rig.session.sent[sent:]
    assert sorted(s.host.name for s in lookups) == ["eastus", "uksouth", "westus"]
    assert all(s.method == "GET" and s.url.startswith(f"{s.host.endpoint}/openai/files/file-nope") for s in lookups)
    again = await call(rig, "/openai/files/file-nope", payload=b"", method="GET")
    assert again.status == 404 and len(rig.session.sent) == sent + 3  # the negative cache: not asked again
    sent = len(rig.session.sent)
    rig.health.eject(UK.key, "probe failed", 60)
    down = await call(rig, "/openai/files/file-uk", payload=b"", method="GET")
    assert down.status == 503 and error_of(down)["code"] == "RegionUnavailable"
    assert "file 'file-uk' lives in region uksouth" in error_of(down)["message"]
    assert len(rig.session.sent) == sent  # neither went anywhere


def batch_answer(sent: Sent) -> FakeResponse:
    batch = {"id": "batch_1", "object": "batch", "status": "completed", "output_file_id": "file-out"}
    return FakeResponse(200, {}, json.dumps(batch).encode())


async def test_a_batch_follows_its_input_file_and_its_output_files_are_recorded() -> None:
    rig = make_rig(batch_answer)
    rig.affinity.put(object_key("file", "file-in"), Home(WEST.key, "app"), 3600)
    rig.ledger.reserve((WEST.key,), WEST.tpm - 10, prompt=0, client="other", deployment=CHAT)  # the busiest host
    payload = json.dumps({"input_file_id": "file-in", "endpoint": "/chat/completions", "completion_window": "24h"})
    created = await call(rig, "/openai/batches", payload=payload.encode())
    assert created.status == 200 and created.headers[BACKEND_HEADER] == "westus"
    assert rig.session.sent[-1].data == payload.encode()  # no model is added to a batch
    assert await rig.affinity.get("batch:batch_1") == Home(WEST.key, "app")
    assert await rig.affinity.get("file:file-out") == Home(WEST.key, "app")
    for method, path in [("GET", "/openai/batches/batch_1"), ("POST", "/openai/batches/batch_1/cancel")]:
        outgoing = await call(rig, path, payload=b"", method=method)
        assert outgoing.status == 200 and rig.session.sent[-1].host == WEST
    rig.session.responder = lambda sent: FakeResponse(404, {}, b'{"error": {"code": "not_found"}}')
    unknown = await call(rig, "/openai/batches", payload=payload.replace("file-in", "file-x").encode())
    assert unknown.status == 404 and error_of(unknown)["message"] == "No file found with id 'file-x'."
