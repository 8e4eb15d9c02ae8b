"""Security end to end: real processes (simulated regions + dev host) on loopback, raw HTTP and the openai SDK.

No secret in any log or answer; an upstream that refuses the gateway's credentials is ejected by name;
path and header tricks never reach anything but a whitelisted operation on a configured region; Entra ID
callers are verified against a JWKS served by the test itself.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import secrets
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import openai
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from openai import AzureOpenAI

from dev.stack import CHAT, EMBEDDINGS, STATIC_TOKEN, RegionSpec, Stack
from tests.e2e.conftest import TIME_SCALE

API_VERSION = "2024-10-21"
MESSAGES: Any = [{"role": "user", "content": "Say something about security."}]
CHAT_PATH = f"/openai/deployments/{CHAT}/chat/completions"
REGIONS = {"eastus", "westus", "uksouth"}
TENANT = "7e1d0b61-1c4f-4b0e-9a55-3f4f1c2d9e10"
OTHER_TENANT = "00000000-0000-0000-0000-00000000dead"
AUDIENCE = "api://gateway"
CALLER_APP = "3c0ffee0-aaaa-bbbb-cccc-0123456789ab"
CALLER_OID = "0b1ec7ed-1111-2222-3333-444455556666"


# --- a Stack whose config makes some hosts api-key hosts ---------------------------------------------------------


@dataclass
class KeyedStack(Stack):
    """Stack with chosen chat hosts on api-key auth (the app setting named here holds the key)."""

    api_key_hosts: Mapping[str, str] = field(default_factory=dict)  # region -> app setting

    def config(self) -> dict[str, Any]:
        doc = super().config()
        for host in doc["deployments"][CHAT]:
            setting = self.api_key_hosts.get(host["name"])
            if setting:
                host["auth"] = {"type": "api-key", "setting": setting}
        return doc


def no_probe_schedule() -> str:
    """An hourly timer half an hour away: the probe never runs during the test (and never races it)."""
    return f"0 {(datetime.now(UTC).minute + 30) % 60} * * * *"


# --- a JWKS endpoint for the Entra ID callers --------------------------------------------------------------------


@dataclass
class Jwks:
    authority: str
    key: rsa.RSAPrivateKey
    kid: str
    hits: dict[str, int]

    def token(
        self,
        *,
        audience: str = AUDIENCE,
        tenant: str = TENANT,
        lifetime: float = 3600,
        key: rsa.RSAPrivateKey | None = None,
        kid: str | None = None,
        issued: float | None = None,
    ) -> str:
        now = time.time() if issued is None else issued
        claims = {
            "iss": f"{self.authority}/{tenant}/v2.0",
            "aud": audience,
            "tid": tenant,
            "azp": CALLER_APP,
            "oid": CALLER_OID,
            "iat": int(now),
            "nbf": int(now),
            "exp": int(now + lifetime),
        }
        return jwt.encode(claims, key or self.key, algorithm="RS256", headers={"kid": kid or self.kid})


@pytest.fixture(scope="module")
def jwks() -> Iterator[Jwks]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    kid = "test-key-1"
    document = json.dumps({"keys": [{**jwk, "kid": kid, "use": "sig"}]}).encode()
    hits: dict[str, int] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits[self.path] = hits.get(self.path, 0) + 1
            found = self.path == f"/{TENANT}/discovery/v2.0/keys"
            payload = document if found else b'{"error": "not found"}'
            self.send_response(200 if found else 404)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Jwks(f"http://127.0.0.1:{server.server_address[1]}", key, kid, hits)
    finally:
        server.shutdown()
        server.server_close()


UK_KEY = "uk-host-key-" + secrets.token_urlsafe(12)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, jwks: Jwks) -> Iterator[KeyedStack]:
    env = {
        "GATEWAY_ENTRA_TENANT_ID": TENANT,
        "GATEWAY_ENTRA_AUDIENCE": AUDIENCE,
        "GATEWAY_ENTRA_AUTHORITY": jwks.authority,
        "GATEWAY_UK_KEY": UK_KEY,
    }
    stack = KeyedStack(
        tmp_path_factory.mktemp("security"),
        time_scale=TIME_SCALE,
        routing={"max_body_bytes": 1_048_576},
        env=env,
        api_key_hosts={"uksouth": "GATEWAY_UK_KEY"},
        clients=[{"name": "entra-app", "entra_app_ids": [CALLER_APP]}],  # the application the tokens are issued to
    )
    with stack:
        yield stack


# --- raw HTTP, so that nothing normalises the request on the way ------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def error(self) -> dict[str, Any]:
        """The OpenAI-shaped error, asserting the shape."""
        assert self.headers.get("content-type") == "application/json", self
        error: dict[str, Any] = json.loads(self.body)["error"]
        assert set(error) == {"code", "message", "type"}
        return error

    def text(self) -> str:
        return json.dumps(self.headers) + self.body.decode("latin-1")


def address(stack: Stack) -> tuple[str, int]:
    host, port = stack.url.removeprefix("http://").split(":")
    return host, int(port)


def raw(stack: Stack, request: bytes, timeout: float = 5.0) -> Answer | None:
    """Send bytes as they are; None if the server closed the connection without an answer."""
    with socket.create_connection(address(stack), timeout=timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        response = http.client.HTTPResponse(sock)
        try:
            response.begin()
            body = response.read()
        except (http.client.RemoteDisconnected, ConnectionResetError):
            return None
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, body)


def build(
    target: str,
    headers: Sequence[tuple[str | bytes, str | bytes]] = (),
    body: bytes | None = None,
    method: str = "POST",
    host: str = "gateway.local",
) -> bytes:
    """A request exactly as written: header values are sent as latin-1 bytes, nothing is checked or escaped."""

    def raw_bytes(text: str | bytes) -> bytes:
        return text.encode("latin-1") if isinstance(text, str) else text

    lines = [f"{method} {target} HTTP/1.1".encode(), b"Host: " + host.encode(), b"Connection: close"]
    lines += [raw_bytes(name) + b": " + raw_bytes(value) for name, value in headers]
    if body is not None:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


def chat_body(**extra: Any) -> bytes:
    return json.dumps({"messages": MESSAGES, "max_tokens": 3, **extra}).encode()


def keyed(stack: Stack, *extra: tuple[str | bytes, str | bytes]) -> list[tuple[str | bytes, str | bytes]]:
    return [("api-key", stack.client_key), ("content-type", "application/json"), *extra]


def admitted(stack: Stack) -> int:
    return sum(
        d["admitted_requests"] for r in stack.regions for d in stack.region_stats(r.name)["deployments"].values()
    )


def sdk(stack: Stack, *, api_key: str | None = None, azure_ad_token: str | None = None) -> AzureOpenAI:
    return AzureOpenAI(
        azure_endpoint=stack.url, api_version=API_VERSION, max_retries=0, api_key=api_key, azure_ad_token=azure_ad_token
    )


def read_logs(stack: Stack) -> dict[str, str]:
    return {log.name: log.read_text(errors="replace") for log in sorted(stack.workdir.glob("*.log"))}


def assert_served_by_a_region(answer: Answer | None) -> None:
    assert answer is not None and answer.status == 200, answer
    assert answer.headers["x-gateway-backend"] in REGIONS
    assert answer.headers["x-ms-region"] == answer.headers["x-gateway-backend"]
    assert json.loads(answer.body)["choices"]


# --- no secret anywhere ------------------------------------------------------------------------------------------


def test_no_secret_or_traceback_in_any_log_or_answer(stack: KeyedStack, jwks: Jwks) -> None:
    answers: list[Answer] = []
    target = f"{CHAT_PATH}?api-version={API_VERSION}"
    wrong_key = "gw-wrong-" + secrets.token_urlsafe(16)
    good_jwt = jwks.token()
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged_jwt = jwks.token(key=stranger, kid="forged-kid")
    other_audience_jwt = jwks.token(audience="api://someone-else")

    def send(expected: int, request: bytes) -> Answer:
        answer = raw(stack, request)
        assert answer is not None
        answers.append(answer)
        assert answer.status == expected, answer
        return answer

    # Success: key, key as bearer (v1 clients), Entra ID token, a stream, embeddings, the api-key host.
    send(200, build(target, keyed(stack), chat_body()))
    send(
        200,
        build("/openai/v1/chat/completions", [("authorization", f"Bearer {stack.client_key}")], chat_body(model=CHAT)),
    )
    send(
        200, build(target, [("authorization", f"Bearer {good_jwt}"), ("content-type", "application/json")], chat_body())
    )
    send(200, build(target, keyed(stack), chat_body(stream=True)))
    send(
        200,
        build(
            f"/openai/deployments/{EMBEDDINGS}/embeddings?api-version={API_VERSION}",
            keyed(stack),
            json.dumps({"input": "hello"}).encode(),
        ),
    )
    # Failed authentication, each presenting something that must not be echoed or logged.
    for credential in (
        ("api-key", wrong_key),
        ("authorization", f"Bearer {wrong_key}"),
        ("authorization", f"Bearer {forged_jwt}"),
        ("authorization", f"Bearer {other_audience_jwt}"),
        ("authorization", "Bearer a.b.c"),
        ("authorization", f"Basic {wrong_key}"),
    ):
        assert send(401, build(target, [credential, ("content-type", "application/json")], chat_body())).error()
    send(401, build("/status", [("api-key", wrong_key)], method="GET"))
    # Refused before any upstream: 404, 400, 413, 405.
    send(
        404,
        build(f"/openai/deployments/gpt-nope/chat/completions?api-version={API_VERSION}", keyed(stack), chat_body()),
    )
    send(404, build(f"/openai/deployments/{CHAT}/fine_tuning/jobs", keyed(stack), b"{}"))
    send(400, build(target, keyed(stack), b"{not json"))
    send(
        413,
        build(
            target, [("api-key", stack.client_key), ("content-type", "application/json"), ("content-length", "2000000")]
        ),
    )
    send(405, build(target, keyed(stack), method="GET"))
    send(405, build(target, keyed(stack), b"{}", method="PUT"))
    # Upstream failures: one region failing, one down; then every region failing.
    try:
        stack.set_faults("eastus", error_500=True)
        stack.set_faults("westus", down=True)
        for _ in range(4):
            send(200, build(target, keyed(stack), chat_body()))
        stack.set_faults("uksouth", error_500=True)
        assert send(502, build(target, keyed(stack), chat_body())).error()["code"] == "BadGateway"
    finally:
        stack.set_faults("eastus", error_500=False)
        stack.set_faults("westus", down=False)
        stack.set_faults("uksouth", error_500=False)
    status = send(200, build("/status", [("api-key", stack.client_key)], method="GET"))
    assert json.loads(status.body)["deployments"][CHAT]

    secret_values = {
        "client key": stack.client_key,
        "upstream token": STATIC_TOKEN,
        "api key of uksouth": UK_KEY,
        "a presented wrong key": wrong_key,
        "an Entra ID token": good_jwt,
        "an Entra ID token's signature": good_jwt.rsplit(".", 1)[1],
        "a forged token's signature": forged_jwt.rsplit(".", 1)[1],
    }
    for answer in answers:
        text = answer.text()
        for what, value in secret_values.items():
            assert value not in text, f"{what} in an answer: {answer}"
        assert "Traceback" not in text
    logs = read_logs(stack)
    assert {"simulator.log", "host-0.log"} <= set(logs)
    assert "upstream" in logs["host-0.log"] or "ejected" in logs["host-0.log"]  # the failures were logged
    for name, text in logs.items():
        for what, value in secret_values.items():
            assert value not in text, f"{what} in {name}"
        assert "Traceback" not in text, f"a traceback in {name}:\n{text[-3000:]}"


# --- path and header tricks --------------------------------------------------------------------------------------

QUERY = f"?api-version={API_VERSION}"
REFUSED_PATHS = [
    "/openai/deployments/../deployments/gpt-4o/chat/completions",
    "/openai/deployments/gpt-4o%2fchat/completions",
    "/openai/deployments/gpt-4o/chat%2Fcompletions",
    "/openai/deployments/%2e%2e/deployments/gpt-4o/chat/completions",
    "/openai/deployments/gpt-4o/chat/completions/..",
    "/openai/deployments/gpt-4o/chat/completions/../../../../_sim/faults",
    "/openai/deployments/gpt-4o@evil.example/chat/completions",
    "/openai/deployments/gpt-4o\\chat\\completions",
    "/openai/deployments/gpt-4o/chat/completions%00",
    "/openai/deployments/gpt-4o/../../_sim/reset",
    "/openai/v1/../deployments/gpt-4o/chat/completions",
    "/openai/deployments/gpt-4o//chat/completions",
    "/openai/deployments/gpt-4o/chat/completions;x=1",
]


@pytest.mark.parametrize("path", REFUSED_PATHS)
def test_path_tricks_are_404_in_openai_shape_and_reach_no_region(stack: KeyedStack, path: str) -> None:
    before = admitted(stack)
    answer = raw(stack, build(path + QUERY, keyed(stack), chat_body()))
    assert answer is not None and answer.status == 404, answer
    assert answer.error()["code"] == "NotFound"
    assert admitted(stack) == before


@pytest.mark.parametrize(
    "path",
    ["/" + CHAT_PATH, "/openai/deployments/gpt-4o%0d%0aHost:%20evil/chat/completions"],
    ids=["double-slash", "encoded-crlf"],
)
def test_paths_outside_the_function_route_are_404_and_reach_no_region(stack: KeyedStack, path: str) -> None:
    """Not the Function's route once decoded ('//openai', a newline): the host's own 404, not OpenAI-shaped."""
    before = admitted(stack)
    answer = raw(stack, build(path + QUERY, keyed(stack), chat_body()))
    assert answer is not None and answer.status == 404, answer
    assert admitted(stack) == before


@pytest.mark.parametrize(
    ("target", "host"),
    [
        (f"http://evil.example{CHAT_PATH}{QUERY}", "gateway.local"),  # absolute form
        (f"http://evil.example:8080{CHAT_PATH}{QUERY}", "evil.example:8080"),
        (CHAT_PATH + QUERY, "evil.example"),  # someone else's Host
        (CHAT_PATH + QUERY, "127.0.0.1:1"),
        (CHAT_PATH + QUERY + "&x=%ff%00&%0d%0a=1&host=evil.example&api-key=", "gateway.local"),  # query junk
    ],
    ids=["absolute-form", "absolute-form-with-host", "foreign-host", "loopback-host", "query-junk"],
)
def test_request_target_and_host_tricks_get_a_configured_region(stack: KeyedStack, target: str, host: str) -> None:
    assert_served_by_a_region(raw(stack, build(target, keyed(stack), chat_body(), host=host)))


@pytest.mark.parametrize(
    "header",
    [
        b"user-agent: a\rInjected: b",  # bare CR
        b"user-agent: a\nInjected: b",  # bare LF
        b"user-agent: a\r\n Injected: b",  # obsolete line folding
        b"user-agent: a\x00b",  # NUL
        b"user-agent: a\x01b",  # a control character
        b"Content-Length: 5\r\nContent-Length: 7",  # conflicting lengths (before the real one)
        b"Transfer-Encoding: chunked",  # with a Content-Length: request smuggling
        b"bad header: 1",  # space in a name
    ],
    ids=["bare-cr", "bare-lf", "obs-fold", "nul", "control", "two-lengths", "te-and-cl", "space-in-name"],
)
def test_malformed_headers_are_refused_or_answered_correctly_never_5xx(stack: KeyedStack, header: bytes) -> None:
    before = admitted(stack)
    request = build(CHAT_PATH + QUERY, [*keyed(stack), (b"x-probe", b"1")], chat_body())
    request = request.replace(b"x-probe: 1", header)
    answer = raw(stack, request)
    if answer is None or answer.status != 200:
        # Refused at the HTTP layer, before the gateway: a 400 or a closed connection, nothing forwarded.
        assert answer is None or answer.status == 400, answer
        assert admitted(stack) == before
    else:
        assert_served_by_a_region(answer)


@pytest.mark.parametrize(
    "extra",
    [
        [("user-agent", "caf\xe9 \xff")],  # obs-text: latin-1 bytes in a forwarded header
        [("connection", "keep-alive, x-secret"), ("x-secret", "1")],  # a nominated hop-by-hop header
        [("x-forwarded-host", "evil.example"), ("x-forwarded-for", "1.2.3.4"), ("forwarded", "host=evil")],
        [("cookie", "a=b"), ("proxy-authorization", "Basic Zm9vOmJhcg==")],
        [("authorization", "Bearer someone-elses-token")],  # alongside a valid api-key
        [("x-ms-client-request-id", "a" * 200)],
        [("expect", "100-continue")],
    ],
    ids=["obs-text", "connection-nominated", "forwarded", "cookie", "second-credential", "long-request-id", "expect"],
)
def test_odd_but_wellformed_headers_are_served_by_a_region(stack: KeyedStack, extra: list[tuple[str, str]]) -> None:
    assert_served_by_a_region(raw(stack, build(CHAT_PATH + QUERY, keyed(stack, *extra), chat_body())))


# --- oversized headers: a stack of its own (the simulator logs a traceback for header lines it refuses) -------------


def test_oversized_headers_never_5xx_and_never_hang(tmp_path: Path) -> None:
    with Stack(tmp_path, time_scale=TIME_SCALE) as stack:
        results: dict[str, Answer | None] = {}
        for name, extra in (
            ("64k-unforwarded", [("x-padding", "a" * 65_536)]),
            ("1m-unforwarded", [("x-padding", "a" * 1_048_576)]),
            ("many-headers", [(f"x-h{i}", "v" * 64) for i in range(2_000)]),
            ("64k-forwarded", [("user-agent", "a" * 65_536)]),
        ):
            started = time.monotonic()
            answer = raw(stack, build(CHAT_PATH + QUERY, keyed(stack, *extra), chat_body()), timeout=10)
            assert time.monotonic() - started < 5, f"{name}: no answer within 5 s"
            results[name] = answer
            assert answer is None or 200 <= answer.status < 500, (name, answer)
            if answer is not None and answer.status == 200:
                assert_served_by_a_region(answer)
        print("\noversized headers:", {k: None if v is None else v.status for k, v in results.items()})
        # The host still serves afterwards.
        assert_served_by_a_region(raw(stack, build(CHAT_PATH + QUERY, keyed(stack), chat_body())))
        assert "Traceback" not in (stack.workdir / "host-0.log").read_text(errors="replace")


# --- an upstream that refuses the gateway's credentials --------------------------------------------------------


def test_upstream_401_ejects_the_host_by_name_and_the_request_succeeds_elsewhere(tmp_path: Path) -> None:
    wrong = "wrong-host-key-" + secrets.token_urlsafe(8)
    regions = (
        RegionSpec("eastus", 10_000, priority=1),  # preferred, so the first request goes there
        RegionSpec("westus", 20_000, priority=2),
        RegionSpec("uksouth", 30_000, priority=2),
    )
    with KeyedStack(
        tmp_path,
        regions=regions,
        time_scale=TIME_SCALE,
        simulator_args=("--api-key", "right-key"),
        env={"GATEWAY_EAST_KEY": wrong, "HEALTH_PROBE_SCHEDULE": no_probe_schedule()},
        # Long enough (20 real seconds) that /status still shows it when asked.
        routing={"ejection_base_seconds": 600, "ejection_max_seconds": 600},
        api_key_hosts={"eastus": "GATEWAY_EAST_KEY"},
    ) as stack:
        client = sdk(stack, api_key=stack.client_key)
        raw_response = client.chat.completions.with_raw_response.create(model=CHAT, messages=MESSAGES, max_tokens=3)
        assert raw_response.parse().choices[0].message.content
        assert raw_response.headers["x-gateway-backend"] in {"westus", "uksouth"}

        [east] = [h for h in stack.status()["deployments"][CHAT] if h["name"] == "eastus"]
        assert east["available"] is False
        assert "Cognitive Services OpenAI User" in east["ejection_reason"]
        assert "401" in east["ejection_reason"]
        # Later requests do not knock on the ejected host first.
        again = client.chat.completions.with_raw_response.create(model=CHAT, messages=MESSAGES, max_tokens=3)
        assert again.headers["x-gateway-backend"] in {"westus", "uksouth"}

        log = (stack.workdir / "host-0.log").read_text(errors="replace")
        lines = [line for line in log.splitlines() if f"eastus/{regions[0].physical}" in line and "401" in line]
        assert lines, log
        assert "Cognitive Services OpenAI User" in lines[0]
        assert wrong not in log and "right-key" not in log


# --- Entra ID callers --------------------------------------------------------------------------------------------


def test_entra_id_caller_through_the_sdk(stack: KeyedStack, jwks: Jwks) -> None:
    client = sdk(stack, azure_ad_token=jwks.token())
    response = client.chat.completions.with_raw_response.create(model=CHAT, messages=MESSAGES, max_tokens=4)
    assert response.parse().usage.completion_tokens == 4  # type: ignore[union-attr]
    assert response.headers["x-gateway-backend"] in REGIONS
    assert jwks.hits.get(f"/{TENANT}/discovery/v2.0/keys", 0) >= 1
    assert stack.status()["clients"]["entra-app"]["tokens_today"] > 0  # the token's application acts as its client


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda j: j.token(issued=time.time() - 7200, lifetime=3600), "expired"),
        (lambda j: j.token(audience="api://another-app"), "audience"),
        (lambda j: j.token(tenant=OTHER_TENANT), "tenant"),
        (lambda j: j.token(key=rsa.generate_private_key(public_exponent=65537, key_size=2048)), "signature"),
        (lambda j: j.token(issued=time.time() + 3600), "not yet valid"),
    ],
    ids=["expired", "other-audience", "other-tenant", "wrong-key-same-kid", "not-yet-valid"],
)
def test_bad_entra_tokens_get_401_in_openai_shape(stack: KeyedStack, jwks: Jwks, make: Any, reason: str) -> None:
    token = make(jwks)
    with pytest.raises(openai.AuthenticationError) as caught:
        sdk(stack, azure_ad_token=token).chat.completions.create(model=CHAT, messages=MESSAGES, max_tokens=1)
    assert caught.value.status_code == 401
    body = caught.value.body
    assert isinstance(body, dict) and body["code"] == "401" and reason in body["message"]
    assert token not in caught.value.response.text
    assert jwks.hits.get(f"/{OTHER_TENANT}/discovery/v2.0/keys", 0) == 0  # never fetched for a foreign tenant
