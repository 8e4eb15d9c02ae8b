"""Images (generations, edits) and audio (transcriptions, translations, speech), on both surfaces.

Streams end with their own terminal event and no [DONE]: `image_generation.completed`, `image_edit.completed`,
`transcript.text.done` (with usage), `speech.audio.done` (with usage). Each is charged against the deployment
like any generation, at a simple cost:
- images: a quarter token per prompt character + per image 272 / 1056 / 4160 tokens for quality low /
  medium or auto / high (gpt-image-1's 1024x1024 output tokens); input images of an edit are not counted;
- transcription and translation: one token per KiB of audio + 16 output tokens (the transcript's 16 words);
- speech: a quarter token per input character, and as many audio tokens (one KiB of audio each).
"""

from __future__ import annotations

import base64
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from dev.sim.context import context
from dev.sim.errors import bad_request
from dev.sim.files import synthetic
from dev.sim.inference import DEFAULT_MAX_TOKENS, text, text_tokens, word
from dev.sim.parse import api_version, deployment, flag, form, json_body, positive_int, upload
from dev.sim.router import Routes
from dev.sim.streams import Last, Streamed, typed_sse
from dev.sim.surfaces import model_paths

Json = dict[str, Any]
IMAGE_TOKENS = {"low": 272, "medium": 1056, "auto": 1056, "high": 4160}
AUDIO_TOKEN_BYTES = 1024
SPEECH_DELTA_BYTES = 4096
# A 1x1 transparent PNG: every generated image (and partial image) is this one.
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
AUDIO_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}


@dataclass(frozen=True)
class MediaCall:
    op: str
    deployment: str
    api_version: str
    input_tokens: int
    output_tokens: int

    @property
    def cost(self) -> int:
        return self.input_tokens + self.output_tokens

    def usage(self) -> Json:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
        }


def mount(routes: Routes) -> None:
    for operation, handler in (
        ("images/generations", _generate),
        ("images/edits", _edit),
        ("audio/transcriptions", _transcribe),
        ("audio/translations", _transcribe),
        ("audio/speech", _speak),
    ):
        for path in model_paths(operation):
            routes.add("POST", path, handler)


async def _generate(request: web.Request) -> web.StreamResponse:
    return await _images(request, "images/generations", await json_body(request))


async def _edit(request: web.Request) -> web.StreamResponse:
    fields = await form(request)
    if not any(isinstance(fields.get(name), web.FileField) for name in ("image", "image[]")):
        raise bad_request("Missing required multipart file field 'image'.")
    return await _images(request, "images/edits", {k: v for k, v in fields.items() if isinstance(v, str)})


async def _images(request: web.Request, op: str, body: Json) -> web.StreamResponse:
    ctx = context(request)
    name = deployment(request, body.get("model"))
    ctx.deployments.check(name)
    prompt, quality = body.get("prompt"), body.get("quality") or "auto"
    if not isinstance(prompt, str) or not prompt:
        raise bad_request("'prompt' is a required property.")
    if quality not in IMAGE_TOKENS:
        raise bad_request(f"Invalid quality {quality!r}; expected one of {sorted(IMAGE_TOKENS)}.")
    count = positive_int(body.get("n"), "n", 1)
    call = MediaCall(op, name, api_version(request), text_tokens(prompt, "prompt"), IMAGE_TOKENS[quality] * count)
    headers = await ctx.admit(call)
    shape = {
        "background": body.get("background") or "auto",
        "output_format": body.get("output_format") or "png",
        "quality": quality,
        "size": body.get("size") or "1024x1024",
    }
    usage = {**call.usage(), "input_tokens_details": {"image_tokens": 0, "text_tokens": call.input_tokens}}
    if flag(body.get("stream")):
        partials = body.get("partial_images") or 0
        if str(partials) not in ("0", "1", "2", "3"):
            raise bad_request("'partial_images' must be an integer from 0 to 3.")
        prefix = "image_generation" if op == "images/generations" else "image_edit"
        return Streamed(_image_events(prefix, count, int(partials), shape, usage), headers=headers)
    images = [{"b64_json": PNG} for _ in range(count)]
    return web.json_response({"created": int(time.time()), "data": images, **shape, "usage": usage}, headers=headers)


async def _image_events(prefix: str, count: int, partials: int, shape: Json, usage: Json) -> AsyncIterator[bytes]:
    created = int(time.time())
    for index in range(partials):
        partial = {"b64_json": PNG, "created_at": created, "partial_image_index": index, **shape}
        yield typed_sse(f"{prefix}.partial_image", partial)
    for index in range(count):
        event = typed_sse(f"{prefix}.completed", {"b64_json": PNG, "created_at": created, **shape, "usage": usage})
        yield Last(event) if index == count - 1 else event


async def _transcribe(request: web.Request) -> web.StreamResponse:
    """Transcriptions and translations: a multipart audio file; the transcript is 16 words."""
    ctx = context(request)
    fields = await form(request)
    name = deployment(request, fields.get("model"))
    ctx.deployments.check(name)
    audio = upload(fields, "file").file.read()
    op = "audio/translations" if request.path.endswith("translations") else "audio/transcriptions"
    tokens = max(1, math.ceil(len(audio) / AUDIO_TOKEN_BYTES))
    call = MediaCall(op, name, api_version(request), tokens, DEFAULT_MAX_TOKENS)
    headers = await ctx.admit(call)
    transcript = text(call.output_tokens)
    usage = {"type": "tokens", **call.usage(), "input_token_details": {"audio_tokens": tokens, "text_tokens": 0}}
    if op == "audio/transcriptions" and flag(fields.get("stream")):
        return Streamed(_transcript_events(call.output_tokens, transcript, usage), headers=headers)
    if fields.get("response_format") == "text":
        return web.Response(text=transcript, headers=headers)
    return web.json_response({"text": transcript, "usage": usage}, headers=headers)


async def _transcript_events(tokens: int, transcript: str, usage: Json) -> AsyncIterator[bytes]:
    for position in range(tokens):
        yield typed_sse("transcript.text.delta", {"delta": word(position) if position == 0 else f" {word(position)}"})
    yield Last(typed_sse("transcript.text.done", {"text": transcript, "usage": usage}))


async def _speak(request: web.Request) -> web.StreamResponse:
    """Speech: deterministic audio bytes, one KiB per input token; SSE deltas with stream_format "sse"."""
    ctx = context(request)
    body = await json_body(request)
    name = deployment(request, body.get("model"))
    ctx.deployments.check(name)
    if not isinstance(body.get("input"), str) or not body["input"]:
        raise bad_request("'input' is a required property.")
    audio_format = body.get("response_format") or "mp3"
    if audio_format not in AUDIO_TYPES:
        raise bad_request(f"Invalid response_format {audio_format!r}; expected one of {sorted(AUDIO_TYPES)}.")
    tokens = text_tokens(body["input"], "input")
    call = MediaCall("audio/speech", name, api_version(request), tokens, tokens)
    headers = await ctx.admit(call)
    audio = b"".join(synthetic(tokens * AUDIO_TOKEN_BYTES))
    if body.get("stream_format") == "sse":
        return Streamed(_speech_events(audio, call.usage()), headers=headers)
    return web.Response(body=audio, content_type=AUDIO_TYPES[audio_format], headers=headers)


async def _speech_events(audio: bytes, usage: Json) -> AsyncIterator[bytes]:
    for start in range(0, len(audio), SPEECH_DELTA_BYTES):
        chunk = base64.b64encode(audio[start : start + SPEECH_DELTA_BYTES]).decode()
        yield typed_sse("speech.audio.delta", {"audio": chunk})
    yield Last(typed_sse("speech.audio.done", {"usage": usage}))
