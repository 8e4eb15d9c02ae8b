"""The official openai SDK against the dev host over three simulated regions, unchanged."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from http.client import HTTPConnection
from typing import Any

import openai
import pytest
from openai import AsyncAzureOpenAI, AzureOpenAI, OpenAI

from dev.stack import CHAT, EMBEDDINGS, STATIC_TOKEN, Stack

API_VERSION = "2024-10-21"
MESSAGES: Any = [{"role": "user", "content": "Say something about load balancing."}]


def client(stack: Stack, key: str | None = None) -> AzureOpenAI:
    return AzureOpenAI(
        azure_endpoint=stack.url, api_key=key or stack.client_key, api_version=API_VERSION, max_retries=0
    )


def http(stack: Stack, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None):
    request = urllib.request.Request(stack.url + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def status(stack: Stack) -> dict[str, Any]:
    code, _, body = http(stack, "GET", "/status", headers={"api-key": stack.client_key})
    assert code == 200
    return json.loads(body)


def served(stack: Stack) -> int:
    return sum(h["served_tokens"] for h in status(stack)["deployments"][CHAT])


def test_chat_completion_names_the_serving_region(stack: Stack) -> None:
    raw = client(stack).chat.completions.with_raw_response.create(model=CHAT, messages=MESSAGES, max_tokens=7)
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert completion.usage is not None and completion.usage.completion_tokens == 7
    assert raw.headers["x-gateway-backend"] in {"eastus", "westus", "uksouth"}
    # Upstream headers pass through: the simulator says which region served.
    assert raw.headers["x-ms-region"] == raw.headers["x-gateway-backend"]
    assert "x-ratelimit-remaining-tokens" in raw.headers


def test_stream_without_include_usage_is_exactly_what_azure_sends(stack: Stack) -> None:
    """The gateway asks upstream for usage but hands the client Azure's own stream, byte for byte."""
    before = served(stack)
    body = json.dumps({"messages": MESSAGES, "max_tokens": 5, "stream": True}).encode()
    path = f"/openai/deployments/{CHAT}/chat/completions?api-version={API_VERSION}"
    code, headers, via_gateway = http(
        stack, "POST", path, body, {"api-key": stack.client_key, "content-type": "application/json"}
    )
    assert code == 200 and headers["content-type"].startswith("text/event-stream")
    region = headers["x-gateway-backend"]
    physical = next(r.physical for r in stack.regions if r.name == region)
    direct = urllib.request.Request(
        f"{stack.region_urls[region]}/openai/deployments/{physical}/chat/completions?api-version={API_VERSION}",
        data=body,
        method="POST",
        headers={"authorization": f"Bearer {STATIC_TOKEN}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(direct, timeout=10) as response:
        from_azure = response.read()

    def normalise(stream: bytes) -> list[Any]:
        events = [e for e in stream.split(b"\n\n") if e]
        parsed: list[Any] = []
        for event in events:
            assert event.startswith(b"data: ")
            data = event[6:]
            if data == b"[DONE]":
                parsed.append("[DONE]")
                continue
            doc = json.loads(data)
            doc.pop("id", None)
            doc.pop("created", None)
            parsed.append(doc)
        return parsed

    assert normalise(via_gateway) == normalise(from_azure)
    assert b'"usage"' not in via_gateway
    # ...yet the gateway counted the real usage (the estimate would have been 5 + prompt too, so check exactness
    # against a request without max_tokens below).
    assert served(stack) > before


def test_reservation_is_settled_with_real_usage_not_the_estimate(stack: Stack) -> None:
    """Without max_tokens the gateway reserves its default (4096); the simulator answers 16 tokens."""
    before = served(stack)
    stream = client(stack).chat.completions.create(model=CHAT, messages=MESSAGES, stream=True)
    chunks = list(stream)
    assert all(c.usage is None for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 16
    deadline = time.monotonic() + 5
    while (delta := served(stack) - before) == 0 and time.monotonic() < deadline:
        time.sleep(
            0.02
        )  # the stream is settled when the gateway has relayed its last event, just after the client read it
    assert 16 < delta < 100  # prompt + 16 completion tokens, nowhere near the 4096 reserved


def test_stream_with_include_usage_keeps_the_usage_chunk(stack: Stack) -> None:
    stream = client(stack).chat.completions.create(
        model=CHAT, messages=MESSAGES, max_tokens=6, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 6


async def test_async_client_streams_chunk_by_chunk(stack: Stack) -> None:
    aclient = AsyncAzureOpenAI(
        azure_endpoint=stack.url, api_key=stack.client_key, api_version=API_VERSION, max_retries=0
    )
    stream = await aclient.chat.completions.create(model=CHAT, messages=MESSAGES, max_tokens=12, stream=True)
    pieces = [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]
    assert len(pieces) == 12  # one event per token arrived separately, not one merged blob
    await aclient.close()


def test_embeddings(stack: Stack) -> None:
    result = client(stack).embeddings.create(model=EMBEDDINGS, input=["first text", "second text"])
    assert [d.index for d in result.data] == [0, 1]
    assert len(result.data[0].embedding) > 0
    assert result.usage.prompt_tokens > 0


def test_v1_surface_routes_by_body_model(stack: Stack) -> None:
    """The v1 surface: OpenAI(base_url=.../openai/v1/) sends the gateway key as a bearer token."""
    v1 = OpenAI(base_url=stack.url + "/openai/v1/", api_key=stack.client_key, max_retries=0)
    raw = v1.chat.completions.with_raw_response.create(model=CHAT, messages=MESSAGES, max_tokens=3)
    assert raw.parse().usage is not None and raw.parse().usage.completion_tokens == 3
    assert raw.headers["x-gateway-backend"] in {"eastus", "westus", "uksouth"}
    embedding = v1.embeddings.create(model=EMBEDDINGS, input="hello")
    assert embedding.data[0].embedding


def test_wrong_key_is_401_in_openai_shape(stack: Stack) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        client(stack, key="not-the-key").chat.completions.create(model=CHAT, messages=MESSAGES, max_tokens=1)
    assert caught.value.status_code == 401
    assert caught.value.body["code"] == "401"  # type: ignore[index]
    assert "not-the-key" not in caught.value.response.text


def test_unknown_deployment_is_404(stack: Stack) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client(stack).chat.completions.create(model="gpt-nonexistent", messages=MESSAGES, max_tokens=1)
    assert caught.value.body["code"] == "DeploymentNotFound"  # type: ignore[index]


@pytest.mark.parametrize(
    ("method", "path", "body", "expected", "code"),
    [
        ("POST", f"/openai/deployments/{CHAT}/chat/completions", b"{not json", 400, "invalid_json"),
        ("POST", f"/openai/deployments/{CHAT}/chat/completions", b"[1, 2]", 400, "invalid_body"),
        ("GET", f"/openai/deployments/{CHAT}/chat/completions", None, 405, "MethodNotAllowed"),
        ("POST", "/openai/deployments/gpt-4o/fine_tuning/jobs", b"{}", 404, "NotFound"),
        ("POST", "/openai/v1/chat/completions", b'{"messages": []}', 400, "missing_model"),
    ],
)
def test_bad_input_gets_an_openai_shaped_error(
    stack: Stack, method: str, path: str, body: bytes | None, expected: int, code: str | None
) -> None:
    headers = {"api-key": stack.client_key, "content-type": "application/json"}
    status_code, response_headers, payload = http(stack, method, path + f"?api-version={API_VERSION}", body, headers)
    assert status_code == expected
    assert response_headers["content-type"] == "application/json"
    error = json.loads(payload)["error"]
    assert set(error) == {"code", "message", "type"}
    if code:
        assert error["code"] == code
    assert "Traceback" not in error["message"]


def test_oversized_body_is_refused_before_it_is_read(stack: Stack) -> None:
    """The client announces 1 GB and sends nothing: the answer must come at once, from the headers alone."""
    host, port = stack.url.removeprefix("http://").split(":")
    connection = HTTPConnection(host, int(port), timeout=5)
    connection.putrequest("POST", f"/openai/deployments/{CHAT}/chat/completions?api-version={API_VERSION}")
    for name, value in (("api-key", stack.client_key), ("content-type", "application/json")):
        connection.putheader(name, value)
    connection.putheader("content-length", str(1_000_000_000))
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413
    assert json.loads(response.read())["error"]["code"] == "request_too_large"
    connection.close()


def test_healthz_and_status(stack: Stack) -> None:
    code, _, body = http(stack, "GET", "/healthz")
    assert code == 200 and json.loads(body)["status"] == "ok"
    assert http(stack, "GET", "/status")[0] == 401  # status needs a credential
    report = status(stack)
    hosts = report["deployments"][CHAT]
    assert {h["name"] for h in hosts} == {"eastus", "westus", "uksouth"}
    assert all(h["available"] for h in hosts)
    assert all("key" not in json.dumps(h).lower() or "api-key" not in json.dumps(h) for h in hosts)
    assert stack.client_key not in json.dumps(report)
