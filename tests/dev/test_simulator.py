"""The simulated Azure OpenAI regions, driven over real loopback HTTP.

Limiter tests use a ManualClock (with zero latency, nothing moves it but the test) so Retry-After values are exact.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import socket
import struct
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import pytest_asyncio
from multidict import CIMultiDictProxy

from dev.simulator import SimDeployment, SimRegion, parse_region, run_regions, start_control
from shared.clock import ManualClock, ScaledClock

ROOT = Path(__file__).resolve().parents[2]
KEY = "test-key"
AUTH = {"api-key": KEY}
VERSION = "2024-10-21"
CHAT = f"/openai/deployments/gpt-4o/chat/completions?api-version={VERSION}"

Launch = Callable[..., Awaitable[tuple[SimRegion, str]]]
Reply = tuple[int, CIMultiDictProxy[str], Any]


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as client:
        yield client


@pytest_asyncio.fixture
async def launch() -> AsyncIterator[Launch]:
    """Start regions named eastus (ManualClock, no latency unless asked); stop them all afterwards."""
    started: list[SimRegion] = []

    async def start(*deployments: SimDeployment, clock: Any = None, **options: Any) -> tuple[SimRegion, str]:
        options = {"ttft": 0.0, "per_token": 0.0, "api_key": KEY, **options}
        region = SimRegion(
            "eastus", deployments or [SimDeployment("gpt-4o", 10_000, rpm=600)], clock or ManualClock(), **options
        )
        started.append(region)
        return region, await region.start()

    yield start
    for region in started:
        await region.stop()


async def post(session: aiohttp.ClientSession, url: str, body: object, headers: dict[str, str] = AUTH) -> Reply:
    data = body if isinstance(body, str) else json.dumps(body)
    async with session.post(url, data=data, headers={"Content-Type": "application/json", **headers}) as resp:
        return resp.status, resp.headers, await resp.json()


def chat_body(content: str = "x" * 40, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], **extra}


async def sse(session: aiohttp.ClientSession, url: str, body: object) -> list[str]:
    async with session.post(url, json=body, headers=AUTH) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream"
        assert resp.headers["Transfer-Encoding"] == "chunked"
        text = (await resp.read()).decode()
    assert text.endswith("\n\n")
    events = text[: -len("\n\n")].split("\n\n")
    assert all(event.startswith("data: ") for event in events)
    return [event.removeprefix("data: ") for event in events]


@pytest.mark.asyncio
async def test_admission_charges_the_estimate_and_reports_remaining(
    launch: Launch, session: aiohttp.ClientSession
) -> None:
    region, url = await launch(SimDeployment("gpt-4o", 1000, rpm=600))
    body = {
        "messages": [{"role": "system", "content": "s" * 10}, {"role": "user", "content": "u" * 30}],
        "max_tokens": 20,
        "n": 2,
    }
    status, headers, reply = await post(session, url + CHAT, body)

    assert status == 200
    assert reply["usage"] == {"prompt_tokens": 10 + 2 * 4, "completion_tokens": 40, "total_tokens": 58}
    assert headers["x-ratelimit-remaining-tokens"] == str(1000 - 58)
    assert headers["x-ratelimit-remaining-requests"] == str(100 - 1)
    assert headers["x-ms-region"] == "eastus"
    uuid.UUID(headers["apim-request-id"])
    uuid.UUID(headers["x-request-id"])
    assert reply["object"] == "chat.completion" and reply["id"].startswith("chatcmpl-")
    assert [c["index"] for c in reply["choices"]] == [0, 1]
    assert len(reply["choices"][0]["message"]["content"].split()) == 20
    assert reply["choices"][0]["finish_reason"] == "length"

    # Without max_tokens 16 are charged and generated; only text parts of content count.
    parts = [{"type": "text", "text": "abcdefgh"}, {"type": "image_url", "image_url": {"url": "data:..."}}]
    status, headers, reply = await post(session, url + CHAT, {"messages": [{"role": "user", "content": parts}]})
    assert status == 200
    assert reply["usage"] == {"prompt_tokens": 2 + 4, "completion_tokens": 16, "total_tokens": 22}
    assert reply["choices"][0]["finish_reason"] == "stop"
    assert headers["x-ratelimit-remaining-tokens"] == str(1000 - 58 - 22)
    assert region.stats["gpt-4o"].admitted_tokens == 80
    assert region.stats["gpt-4o"].admitted_requests == 2


@pytest.mark.asyncio
async def test_token_limit_429_has_exact_retry_after_and_charges_nothing(
    launch: Launch, session: aiohttp.ClientSession
) -> None:
    clock = ManualClock()
    region, url = await launch(SimDeployment("gpt-4o", 1000, rpm=600), clock=clock)
    big = chat_body(max_tokens=286)  # 14 prompt + 286 = 300 tokens
    for _ in range(3):  # charged at t = 0, 10, 20
        assert (await post(session, url + CHAT, big))[0] == 200
        clock.advance(10)
    clock.advance(-5)  # t = 25: 900 used, 300 more does not fit until the t=0 charge expires at 60

    status, headers, reply = await post(session, url + CHAT, big)
    assert status == 429
    assert headers["retry-after-ms"] == "35000"
    assert headers["retry-after"] == "35"
    assert headers["x-ratelimit-reset-tokens"] == "35"
    assert "x-ratelimit-reset-requests" not in headers
    assert headers["x-ms-region"] == "eastus"
    assert reply["error"]["code"] == "429"
    assert "exceeded token rate limit" in reply["error"]["message"]
    assert "Please retry after 35 seconds" in reply["error"]["message"]
    assert f"API version {VERSION}" in reply["error"]["message"]
    assert region.stats["gpt-4o"].throttled_quota == 1

    # The 429 charged nothing: exactly the 100 tokens left still fit.
    status, headers, _ = await post(session, url + CHAT, chat_body("", max_tokens=96))
    assert (status, headers["x-ratelimit-remaining-tokens"]) == (200, "0")

    clock.advance(34.5)  # t = 59.5
    status, headers, _ = await post(session, url + CHAT, big)
    assert (status, headers["retry-after-ms"], headers["retry-after"]) == (429, "500", "1")
    clock.advance(0.5)  # t = 60: the first charge has left the window
    status, headers, _ = await post(session, url + CHAT, big)
    assert (status, headers["x-ratelimit-remaining-tokens"]) == (200, "0")
    assert region.stats["gpt-4o"].admitted_tokens == 1000 + 300


@pytest.mark.asyncio
async def test_rpm_limit_allows_rpm_over_6_per_10_seconds(launch: Launch, session: aiohttp.ClientSession) -> None:
    assert SimDeployment("gpt-4o", 10_000).requests_per_window == 10  # 60 RPM by Azure's 6 per 1000 TPM
    clock = ManualClock()
    region, url = await launch(SimDeployment("gpt-4o", 100_000, rpm=12), clock=clock)
    small = chat_body(max_tokens=1)
    status, headers, _ = await post(session, url + CHAT, small)
    assert (status, headers["x-ratelimit-remaining-requests"]) == (200, "1")
    clock.advance(4)
    status, headers, _ = await post(session, url + CHAT, small)
    assert (status, headers["x-ratelimit-remaining-requests"]) == (200, "0")
    clock.advance(2)

    status, headers, reply = await post(session, url + CHAT, small)
    assert status == 429
    assert (headers["retry-after-ms"], headers["x-ratelimit-reset-requests"]) == ("4000", "4")
    assert "x-ratelimit-reset-tokens" not in headers
    assert "exceeded call rate limit" in reply["error"]["message"]

    clock.advance(4)  # t = 10: the request of t = 0 has left the 10 s window
    assert (await post(session, url + CHAT, small))[0] == 200
    assert region.stats["gpt-4o"].admitted_requests == 3


@pytest.mark.asyncio
async def test_stream_with_include_usage_marks_every_chunk_usage_null(
    launch: Launch, session: aiohttp.ClientSession
) -> None:
    _, url = await launch()
    body = chat_body("y" * 8, max_tokens=5, stream=True, stream_options={"include_usage": True})
    events = await sse(session, url + CHAT, body)

    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert chunks[0]["choices"] == [] and "prompt_filter_results" in chunks[0]
    assert all("usage" in chunk and chunk["usage"] is None for chunk in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 2 + 4, "completion_tokens": 5, "total_tokens": 11}
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks[1:-1]]
    assert deltas[0]["role"] == "assistant"
    assert len("".join(delta.get("content", "") for delta in deltas).split()) == 5
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks[1:])
    assert ", " not in events[1] and ": " not in events[1]  # compact JSON


@pytest.mark.asyncio
async def test_stream_without_include_usage_has_no_usage_key(launch: Launch, session: aiohttp.ClientSession) -> None:
    _, url = await launch()
    events = await sse(session, url + CHAT, chat_body(max_tokens=3, stream=True))
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert len(chunks) == 1 + 3 + 1  # prompt filter, one per token, finish
    assert not any("usage" in chunk for chunk in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


@pytest.mark.asyncio
async def test_stream_options_needs_api_version_2024_09_01(launch: Launch, session: aiohttp.ClientSession) -> None:
    _, url = await launch()
    body = chat_body(max_tokens=2, stream=True, stream_options={"include_usage": True})
    old = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-08-01-preview"
    status, _, reply = await post(session, url + old, body)
    assert status == 400 and "stream_options" in reply["error"]["message"]
    assert (await sse(session, url + old.replace("2024-08-01", "2024-09-01"), body))[-1] == "[DONE]"
    assert (await sse(session, url + "/openai/v1/chat/completions", {**body, "model": "gpt-4o"}))[-1] == "[DONE]"


@pytest.mark.asyncio
async def test_unknown_deployment_is_404(launch: Launch, session: aiohttp.ClientSession) -> None:
    _, url = await launch()
    status, headers, reply = await post(session, url + CHAT.replace("gpt-4o", "gpt-5"), chat_body())
    assert (status, reply["error"]["code"]) == (404, "DeploymentNotFound")
    assert headers["x-ms-region"] == "eastus"
    status, _, reply = await post(session, url + "/openai/v1/chat/completions", chat_body(model="gpt-5"))
    assert (status, reply["error"]["code"]) == (404, "DeploymentNotFound")


@pytest.mark.asyncio
async def test_auth_accepts_the_key_or_any_bearer_token(launch: Launch, session: aiohttp.ClientSession) -> None:
    _, url = await launch()
    for headers in ({}, {"api-key": "wrong"}, {"Authorization": "Bearer "}):
        status, _, reply = await post(session, url + CHAT, chat_body(), headers)
        assert status == 401
        assert reply["error"]["code"] == "401"
        assert reply["error"]["message"].startswith("Access denied due to invalid subscription key")
    assert (await post(session, url + CHAT, chat_body(), {"Authorization": "Bearer token"}))[0] == 200
    assert (await post(session, url + CHAT, chat_body()))[0] == 200


@pytest.mark.asyncio
async def test_bad_requests_are_400_and_uncharged(launch: Launch, session: aiohttp.ClientSession) -> None:
    region, url = await launch()
    no_version = "/openai/deployments/gpt-4o/chat/completions"
    assert (await post(session, url + no_version, chat_body()))[0] == 400
    assert (await post(session, url + CHAT, "{not json"))[0] == 400
    assert (await post(session, url + CHAT, {"messages": []}))[0] == 400
    assert (await post(session, url + CHAT, chat_body(max_tokens=0)))[0] == 400
    assert (await post(session, url + "/openai/v1/chat/completions", chat_body()))[0] == 400  # no model
    assert region.stats["gpt-4o"].admitted_requests == 0


@pytest.mark.asyncio
async def test_models_listing_is_free(launch: Launch, session: aiohttp.ClientSession) -> None:
    region, url = await launch(SimDeployment("gpt-4o", 1000, rpm=6))  # one request per 10 s
    for _ in range(3):
        async with session.get(f"{url}/openai/models?api-version={VERSION}", headers=AUTH) as resp:
            assert resp.status == 200
            assert [m["id"] for m in (await resp.json())["data"]] == ["gpt-4o"]
    async with session.get(f"{url}/openai/models?api-version={VERSION}") as resp:
        assert resp.status == 401
    status, headers, _ = await post(session, url + CHAT, chat_body())
    assert (status, headers["x-ratelimit-remaining-tokens"]) == (200, str(1000 - 30))
    assert region.stats["gpt-4o"].admitted_requests == 1


@pytest.mark.asyncio
async def test_embeddings_and_legacy_completions(launch: Launch, session: aiohttp.ClientSession) -> None:
    _, url = await launch(SimDeployment("emb", 10_000), SimDeployment("gpt-35-turbo-instruct", 10_000))
    path = f"{url}/openai/deployments/emb/embeddings?api-version={VERSION}"
    status, headers, floats = await post(session, path, {"input": ["abcd", "efghij"]})
    assert status == 200 and headers["x-ratelimit-remaining-tokens"] == str(10_000 - 3)
    assert floats["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    assert [(d["object"], d["index"], len(d["embedding"])) for d in floats["data"]] == [
        ("embedding", 0, 8),
        ("embedding", 1, 8),
    ]
    _, _, encoded = await post(session, path, {"input": ["abcd", "efghij"], "encoding_format": "base64"})
    decoded = [list(struct.unpack("<8f", base64.b64decode(d["embedding"]))) for d in encoded["data"]]
    assert decoded == [d["embedding"] for d in floats["data"]]
    _, _, ids = await post(session, path, {"input": [1, 2, 3]})
    assert (len(ids["data"]), ids["usage"]["prompt_tokens"]) == (1, 3)

    legacy = f"{url}/openai/deployments/gpt-35-turbo-instruct/completions?api-version={VERSION}"
    status, _, reply = await post(session, legacy, {"prompt": "abcdefgh", "max_tokens": 7})
    assert status == 200 and reply["object"] == "text_completion"
    assert len(reply["choices"][0]["text"].split()) == 7
    assert reply["usage"] == {"prompt_tokens": 2, "completion_tokens": 7, "total_tokens": 9}


@pytest.mark.asyncio
async def test_openai_sdk_against_the_simulator(launch: Launch) -> None:
    _, url = await launch(SimDeployment("gpt-4o", 200, rpm=600), SimDeployment("emb", 10_000))
    client = openai.AsyncAzureOpenAI(azure_endpoint=url, api_key=KEY, api_version=VERSION, max_retries=0)
    try:
        reply = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hello"}], max_tokens=10
        )
        assert reply.usage is not None and reply.usage.total_tokens == 2 + 4 + 10
        assert len((reply.choices[0].message.content or "").split()) == 10

        stream = await client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "hello"}],
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).split() == [
            "alpha",
            "bravo",
            "charlie",
            "delta",
        ]

        embedded = await client.embeddings.create(model="emb", input=["abcd", "efgh"])  # SDK asks for base64
        assert [len(item.embedding) for item in embedded.data] == [8, 8]

        with pytest.raises(openai.RateLimitError) as caught:  # 16 + 10 of the 200 tokens used: 196 more do not fit
            await client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "hello"}], max_tokens=190
            )
        assert int(caught.value.response.headers["retry-after-ms"]) > 0
    finally:
        await client.close()


@pytest.mark.asyncio
async def test_responses_live_in_the_region_that_created_them(launch: Launch) -> None:
    """The Responses API on v1 through the SDK: create, continue, stream, get, delete; other regions say 404."""
    _, home = await launch(SimDeployment("gpt-4o", 10_000, rpm=600))
    _, elsewhere = await launch(SimDeployment("gpt-4o", 10_000, rpm=600))
    here = openai.AsyncOpenAI(base_url=home + "/openai/v1/", api_key=KEY, max_retries=0)
    there = openai.AsyncOpenAI(base_url=elsewhere + "/openai/v1/", api_key=KEY, max_retries=0)
    try:
        first = await here.responses.create(model="gpt-4o", input="hello", max_output_tokens=3)
        assert first.id.startswith("resp_") and first.output_text == "alpha bravo charlie"
        assert first.usage is not None and first.usage.total_tokens == 2 + 3
        second = await here.responses.create(model="gpt-4o", input="more", previous_response_id=first.id)
        assert second.previous_response_id == first.id
        assert (await here.responses.retrieve(first.id)).id == first.id

        with pytest.raises(openai.NotFoundError) as caught:
            await there.responses.create(model="gpt-4o", input="more", previous_response_id=first.id)
        assert caught.value.body["code"] == "previous_response_not_found"  # type: ignore[index]
        with pytest.raises(openai.NotFoundError):
            await there.responses.retrieve(first.id)

        stream = await here.responses.create(model="gpt-4o", input="hi", max_output_tokens=2, stream=True)
        events = [event async for event in stream]
        assert [e.type for e in events] == [
            "response.created",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.completed",
        ]
        streamed = events[0].response.id  # type: ignore[union-attr]
        assert (await here.responses.retrieve(streamed)).output_text == "alpha bravo"

        await here.responses.delete(first.id)
        with pytest.raises(openai.NotFoundError):
            await here.responses.retrieve(first.id)
    finally:
        await here.close()
        await there.close()


@pytest.mark.asyncio
async def test_latency_model_and_slow_fault_spend_clock_time(launch: Launch, session: aiohttp.ClientSession) -> None:
    clock = ManualClock()
    region, url = await launch(clock=clock, ttft=0.3, per_token=0.01)
    assert (await post(session, url + CHAT, chat_body(max_tokens=50)))[0] == 200
    assert clock.now() == pytest.approx(0.3 + 50 * 0.01)
    region.faults.slow = 2.0
    await sse(session, url + CHAT, chat_body(max_tokens=50, stream=True))
    assert clock.now() == pytest.approx(0.8 + 2.0 + 0.3 + 49 * 0.01)


@pytest.mark.asyncio
async def test_down_refuses_connections_and_reopens_the_same_port(
    launch: Launch, session: aiohttp.ClientSession
) -> None:
    region, url = await launch()
    assert (await post(session, url + CHAT, chat_body()))[0] == 200  # leaves a keep-alive connection open
    status, _, state = await post(session, url + "/_sim/faults", {"down": True})
    assert status == 200 and state["faults"]["down"] is True

    with pytest.raises(aiohttp.ClientConnectionError):
        await post(session, url + CHAT, chat_body())
    port = int(url.rsplit(":", 1)[1])
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass

    await region.set_down(False)
    assert region.endpoint == url
    assert (await post(session, url + CHAT, chat_body()))[0] == 200
    assert region.faults.down is False


@pytest.mark.asyncio
async def test_500_and_capacity_faults(launch: Launch, session: aiohttp.ClientSession) -> None:
    region, url = await launch()
    region.faults.error_500 = True
    status, headers, reply = await post(session, url + CHAT, chat_body())
    assert (status, reply["error"]["code"]) == (500, "InternalServerError")
    assert headers["x-ms-region"] == "eastus"
    async with session.get(f"{url}/openai/models?api-version={VERSION}", headers=AUTH) as resp:
        assert resp.status == 500  # the health probe sees the failing region too

    region.faults.error_500, region.faults.capacity_429 = False, True
    status, headers, reply = await post(session, url + CHAT, chat_body())
    assert (status, reply["error"]["code"]) == (429, "429")
    assert "high demand" in reply["error"]["message"]
    assert int(headers["retry-after"]) >= 1
    stats = region.stats["gpt-4o"]
    assert (stats.errors_500, stats.throttled_capacity, stats.admitted_tokens) == (1, 1, 0)


@pytest.mark.asyncio
async def test_drop_mid_stream_breaks_the_body_without_done(launch: Launch, session: aiohttp.ClientSession) -> None:
    region, url = await launch()
    region.faults.drop_mid_stream = True
    received = b""
    with pytest.raises(aiohttp.ClientPayloadError):
        async with session.post(url + CHAT, json=chat_body(max_tokens=20, stream=True), headers=AUTH) as resp:
            assert resp.status == 200
            async for data in resp.content.iter_any():
                received += data
    assert received.count(b"data: ") == 1 + 3  # prompt filter chunk and three tokens
    assert b"[DONE]" not in received
    assert region.stats["gpt-4o"].admitted_requests == 1  # admitted and charged before it broke


@pytest.mark.asyncio
async def test_control_server_survives_a_region_going_down(session: aiohttp.ClientSession) -> None:
    specs = [("eastus", [SimDeployment("gpt-4o", 10_000)]), ("westus", [SimDeployment("gpt-4o", 20_000)])]
    regions = await run_regions(specs, ScaledClock(600), ttft=0.0, per_token=0.0)
    runner, control = await start_control(regions)
    east, west = (region.endpoint for region in regions)
    try:
        status, _, state = await post(session, control + "/_sim/westus/faults", {"error_500": True})
        assert status == 200 and state["faults"]["error_500"] is True
        assert (await post(session, west + CHAT, chat_body()))[0] == 500
        assert (await post(session, east + CHAT, chat_body()))[0] == 200

        assert (await post(session, control + "/_sim/eastus/faults", {"down": True}))[0] == 200
        with pytest.raises(aiohttp.ClientConnectionError):
            await post(session, east + CHAT, chat_body())
        assert (await post(session, control + "/_sim/eastus/faults", {"down": False}))[0] == 200
        assert (await post(session, east + CHAT, chat_body()))[0] == 200

        async with session.get(control + "/_sim/eastus/stats") as resp:
            assert (await resp.json())["deployments"]["gpt-4o"]["admitted_requests"] == 2
        assert (await post(session, control + "/_sim/eastus/faults", {"slow": "very"}))[0] == 400
        assert (await post(session, control + "/_sim/nowhere/faults", {}, {}))[0] == 404
        assert (await post(session, control + "/_sim/reset", {}))[0] == 200
        assert regions[0].stats["gpt-4o"].admitted_requests == 0
        assert regions[1].faults.error_500 is True  # reset clears windows and counters, not faults
    finally:
        await runner.cleanup()
        for region in regions:
            await region.stop()


def test_region_spec_parsing() -> None:
    name, deployments = parse_region("eastus:gpt-4o=10000,text-embedding-3-small=50000")
    assert name == "eastus"
    assert deployments == [SimDeployment("gpt-4o", 10_000), SimDeployment("text-embedding-3-small", 50_000)]
    for bad in ("eastus", "eastus:gpt-4o", "eastus:gpt-4o=ten", ":gpt-4o=1"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_region(bad)


@pytest.mark.asyncio
async def test_cli_prints_one_json_line_and_exits_cleanly_on_sigterm(session: aiohttp.ClientSession) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dev.simulator",
        "--region",
        "eastus:gpt-4o=10000",
        "--region",
        "westus:gpt-4o=20000,emb=50000",
        "--time-scale",
        "30",
        "--port",
        "0",
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(await asyncio.wait_for(proc.stdout.readline(), timeout=10))
        assert set(info) == {"regions", "control"}
        assert set(info["regions"]) == {"eastus", "westus"}
        west = info["regions"]["westus"]
        status, headers, _ = await post(
            session, f"{west}/openai/deployments/emb/embeddings?api-version={VERSION}", {"input": "hello"}
        )
        assert (status, headers["x-ms-region"]) == (200, "westus")
        async with session.get(info["control"] + "/_sim/westus/stats") as resp:
            assert (await resp.json())["deployments"]["emb"]["admitted_requests"] == 1
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        rest, errors = await asyncio.wait_for(proc.communicate(), timeout=10)
    assert proc.returncode == 0, errors.decode()
    assert rest == b""  # exactly one line on stdout


@pytest.mark.asyncio
async def test_files_live_in_the_region_that_stored_them(launch: Launch, session: aiohttp.ClientSession) -> None:
    """Upload, read, list, download and delete through the Azure SDK; another region knows nothing of them."""
    _, home = await launch()
    _, elsewhere = await launch()
    here = openai.AsyncAzureOpenAI(azure_endpoint=home, api_key=KEY, api_version=VERSION, max_retries=0)
    there = openai.AsyncAzureOpenAI(azure_endpoint=elsewhere, api_key=KEY, api_version=VERSION, max_retries=0)
    try:
        first = await here.files.create(file=("data.jsonl", b'{"a": 1}\n'), purpose="batch")
        second = await here.files.create(file=("more.jsonl", b"{}\n"), purpose="batch")
        assert first.id.startswith("file-") and (first.bytes, first.filename, first.status) == (
            9,
            "data.jsonl",
            "processed",
        )
        assert (await here.files.retrieve(first.id)).id == first.id
        assert (await here.files.content(first.id)).read() == b'{"a": 1}\n'
        listed = await here.files.list()
        assert [f.id for f in listed.data] == [second.id, first.id]
        assert [f.id for f in (await here.files.list(limit=1)).data] == [second.id]  # newest first
        with pytest.raises(openai.NotFoundError):
            await there.files.retrieve(first.id)
        assert (await there.files.list()).data == []
        assert (await here.files.delete(first.id)).deleted
        with pytest.raises(openai.NotFoundError):
            await here.files.content(first.id)
    finally:
        await here.close()
        await there.close()
    async with session.get(f"{home}/openai/files", headers=AUTH) as resp:
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "MissingApiVersionParameter"
    async with session.get(f"{home}/openai/v1/files", headers=AUTH) as resp:
        assert resp.status == 200


@pytest.mark.asyncio
async def test_a_batch_needs_its_input_file_in_the_same_region(launch: Launch) -> None:
    _, home = await launch()
    _, elsewhere = await launch()
    here = openai.AsyncAzureOpenAI(azure_endpoint=home, api_key=KEY, api_version=VERSION, max_retries=0)
    there = openai.AsyncAzureOpenAI(azure_endpoint=elsewhere, api_key=KEY, api_version=VERSION, max_retries=0)
    try:
        file = await here.files.create(file=("in.jsonl", b"{}\n"), purpose="batch")
        batch = await here.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        assert batch.id.startswith("batch_") and (batch.status, batch.input_file_id) == ("validating", file.id)
        assert (await here.batches.retrieve(batch.id)).id == batch.id
        assert [b.id for b in (await here.batches.list()).data] == [batch.id]
        assert (await here.batches.cancel(batch.id)).status == "cancelling"
        with pytest.raises(openai.NotFoundError):
            await there.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
        with pytest.raises(openai.NotFoundError):
            await there.batches.retrieve(batch.id)
        with pytest.raises(openai.BadRequestError):
            await here.batches.create(input_file_id=file.id, endpoint=7, completion_window="24h")  # type: ignore[arg-type]
    finally:
        await here.close()
        await there.close()
