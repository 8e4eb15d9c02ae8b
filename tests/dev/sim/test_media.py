"""Images and audio on both surfaces: JSON or bytes, or streams ending with their own terminal event (no [DONE]),
parsed by the SDK's stream types; each is charged against the deployment at its documented cost."""

from __future__ import annotations

import base64
import json
import math

import aiohttp
import pytest

from dev.sim.files import synthetic
from dev.sim.inference import text
from dev.sim.media import PNG
from dev.simulator import SimDeployment
from tests.dev.sim.conftest import AUTH, Clients, Launch

AUDIO = b"\x00" * 3000  # three KiB-tokens of "audio"
DEPLOYMENTS = (SimDeployment("transcribe", 100_000), SimDeployment("tts", 100_000), SimDeployment("image", 100_000))


def charged(region: object, deployment: str) -> int:
    return region.snapshot()["deployments"][deployment]["admitted_tokens"]  # type: ignore[attr-defined,no-any-return]


@pytest.mark.asyncio
async def test_transcriptions_stream_text_deltas_then_done_with_usage(
    launch: Launch, sdk: Clients, session: aiohttp.ClientSession
) -> None:
    region, url = await launch(*DEPLOYMENTS)
    for client in (sdk.azure(url), sdk.v1(url)):
        stream = await client.audio.transcriptions.create(model="transcribe", file=("a.wav", AUDIO), stream=True)
        events = [event async for event in stream]
        assert [e.type for e in events] == ["transcript.text.delta"] * 16 + ["transcript.text.done"]
        done = events[-1]
        assert done.text == "".join(e.delta for e in events[:-1]) == text(16)  # type: ignore[union-attr]
        assert done.usage is not None and (done.usage.input_tokens, done.usage.output_tokens) == (3, 16)  # type: ignore[union-attr]
    whole = await sdk.azure(url).audio.transcriptions.create(model="transcribe", file=("a.wav", AUDIO))
    plain = await sdk.v1(url).audio.transcriptions.create(
        model="transcribe", file=("a.wav", AUDIO), response_format="text"
    )
    form = aiohttp.FormData({"model": "transcribe"})
    form.add_field("file", AUDIO, filename="a.wav")
    async with session.post(f"{url}/openai/v1/audio/translations", data=form, headers=AUTH) as resp:
        translated = await resp.json()  # the SDK marks translations deprecated; the route is still Azure's
    assert whole.text == plain.strip() == translated["text"] == text(16)
    assert charged(region, "transcribe") == 5 * (math.ceil(len(AUDIO) / 1024) + 16)
    assert region.snapshot()["calls"]["POST /openai/v1/audio/transcriptions"] == 2


@pytest.mark.asyncio
async def test_speech_is_audio_bytes_or_an_sse_stream_of_them(
    launch: Launch, sdk: Clients, session: aiohttp.ClientSession
) -> None:
    region, url = await launch(*DEPLOYMENTS)
    spoken = "say this"  # 2 tokens: 2 KiB of audio
    audio = await sdk.azure(url).audio.speech.create(model="tts", voice="alloy", input=spoken)
    assert audio.response.headers["content-type"] == "audio/mpeg"
    assert audio.read() == b"".join(synthetic(2048))
    wav = await sdk.v1(url).audio.speech.create(model="tts", voice="alloy", input=spoken, response_format="wav")
    assert wav.response.headers["content-type"] == "audio/wav"

    body = {"model": "tts", "voice": "alloy", "input": spoken, "stream_format": "sse"}
    async with session.post(f"{url}/openai/v1/audio/speech", json=body, headers=AUTH) as resp:
        assert resp.headers["content-type"] == "text/event-stream"
        raw = (await resp.read()).decode()
    events = [json.loads(block.split("data: ", 1)[1]) for block in raw.strip().split("\n\n")]
    assert [e["type"] for e in events] == ["speech.audio.delta", "speech.audio.done"]
    assert base64.b64decode(events[0]["audio"]) == audio.read()
    assert events[-1]["usage"] == {"input_tokens": 2, "output_tokens": 2, "total_tokens": 4}
    assert "[DONE]" not in raw
    assert charged(region, "tts") == 3 * 4


@pytest.mark.asyncio
async def test_image_generations_and_edits_stream_partial_images_then_completed(launch: Launch, sdk: Clients) -> None:
    region, url = await launch(*DEPLOYMENTS)
    azure = sdk.azure(url)
    image = await azure.images.generate(model="image", prompt="a red fox", n=2, quality="low")
    assert [d.b64_json for d in image.data or []] == [PNG, PNG]
    assert image.usage is not None and image.usage.output_tokens == 2 * 272

    stream = await azure.images.generate(model="image", prompt="a red fox", stream=True, partial_images=2)
    events = [event async for event in stream]
    assert [e.type for e in events] == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    assert [e.partial_image_index for e in events[:2]] == [0, 1]  # type: ignore[union-attr]
    assert events[-1].usage.output_tokens == 1056 and events[-1].b64_json == PNG  # type: ignore[union-attr]

    edits = await sdk.v1(url).images.edit(
        model="image", image=("in.png", base64.b64decode(PNG)), prompt="make it blue", stream=True, partial_images=1
    )
    kinds = [event.type async for event in edits]
    assert kinds == ["image_edit.partial_image", "image_edit.completed"]
    prompt = math.ceil(len("a red fox") / 4)
    assert charged(region, "image") == (prompt + 2 * 272) + (prompt + 1056) + (math.ceil(12 / 4) + 1056)
