"""Chat, completions and embeddings: estimates, bodies and chat-style streams, raw and through the SDK."""

from __future__ import annotations

import base64
import json
import struct

import aiohttp
import openai
import pytest

from dev.simulator import SimDeployment
from tests.dev.sim.conftest import CHAT, VERSION, Clients, Launch, chat_body, post, sse


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
    v1 = {"model": "gpt-35-turbo-instruct", "prompt": "abcdefgh", "max_tokens": 7}
    assert (await post(session, f"{url}/openai/v1/completions", v1))[2]["usage"] == reply["usage"]


@pytest.mark.asyncio
async def test_openai_sdk_against_the_simulator(launch: Launch, sdk: Clients) -> None:
    _, url = await launch(SimDeployment("gpt-4o", 200, rpm=600), SimDeployment("emb", 10_000))
    client = sdk.azure(url, VERSION)
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
