"""Chat completions, legacy completions and embeddings: request parsing, the token estimate, answer bodies.

The estimate is Azure-like and is what admission charges: a quarter token per character of text content plus 4
per chat message, plus `max_tokens` (16 when absent, as Microsoft's simulator) times `n`. Answers are made of
deterministic words (alpha, bravo, ...), one per token, so tests can count them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from dev.sim.context import Context, context
from dev.sim.errors import bad_request
from dev.sim.parse import api_version, deployment, json_body, positive_int
from dev.sim.router import Handler, Routes
from dev.sim.streams import DONE, Streamed, sse
from dev.sim.surfaces import model_paths

Json = dict[str, Any]
DEFAULT_MAX_TOKENS = 16
EMBEDDING_DIMS = 8
STREAM_OPTIONS_SINCE = "2024-09-01"  # older api-versions reject stream_options
WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet")


@dataclass(frozen=True)
class Call:
    """A parsed generation: what it costs and what to generate."""

    op: str  # "chat" | "completions" | "embeddings" | "responses"
    deployment: str
    api_version: str  # "v1" on the v1 surface, for messages only
    body: Json
    prompt_tokens: int
    completion_tokens: int  # per choice
    choices: int
    explicit_max: bool  # max_tokens given: generation stops for "length"
    stream: bool
    include_usage: bool

    @property
    def cost(self) -> int:
        return self.prompt_tokens + self.completion_tokens * self.choices


def mount(routes: Routes) -> None:
    for op, operation in (("chat", "chat/completions"), ("completions", "completions"), ("embeddings", "embeddings")):
        for path in model_paths(operation):
            routes.add("POST", path, _handler(op))


def _handler(op: str) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        ctx = context(request)
        body = await json_body(request)
        name = deployment(request, body.get("model"))
        ctx.deployments.check(name)
        call = parse_call(op, name, api_version(request), body)
        headers = await ctx.admit(call)
        if call.stream:
            return Streamed(_events(ctx, call), headers=headers)
        await ctx.generate(call.completion_tokens)
        return web.json_response(_embeddings(call) if op == "embeddings" else _completion(call), headers=headers)

    return handle


def parse_call(op: str, deployment: str, api_version: str, body: Json) -> Call:
    if op == "embeddings":
        prompt = text_tokens(body.get("input"), "input")
        return Call(op, deployment, api_version, body, prompt, 0, 1, False, stream=False, include_usage=False)
    if op == "chat":
        prompt = chat_tokens(body.get("messages"))
    elif op == "responses":
        value = body.get("input")
        prompt = text_tokens(value, "input") if isinstance(value, str) else chat_tokens(value)
    else:
        prompt = text_tokens(body.get("prompt"), "prompt")
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens", body.get("max_output_tokens")))
    stream = body.get("stream") is True
    return Call(
        op,
        deployment,
        api_version,
        body,
        prompt,
        positive_int(max_tokens, "max_tokens", DEFAULT_MAX_TOKENS),
        positive_int(body.get("n"), "n", 1),
        explicit_max=max_tokens is not None,
        stream=stream,
        include_usage=stream and _include_usage(body.get("stream_options"), api_version),
    )


def _include_usage(options: object, api_version: str) -> bool:
    if options is None:
        return False
    if api_version[:10] < STREAM_OPTIONS_SINCE and api_version[:1].isdigit():
        raise bad_request("Unrecognized request argument supplied: stream_options")
    if not isinstance(options, dict):
        raise bad_request("'stream_options' must be an object.")
    return options.get("include_usage") is True


def chat_tokens(messages: object) -> int:
    """A quarter token per character of content plus 4 per message."""
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise bad_request("'messages' must be a non-empty array of message objects.")
    chars = sum(content_chars(m.get("content")) for m in messages)
    return math.ceil(chars / 4) + 4 * len(messages)


def content_chars(content: object) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):  # content parts; only text parts count
        return sum(len(p["text"]) for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return 0


def text_tokens(value: object, name: str) -> int:
    """A string, a list of strings, token ids or lists of token ids: chars/4, one token per id."""
    chars, token_ids = _count_text(value, name, depth=0)
    return math.ceil(chars / 4) + token_ids


def _count_text(value: object, name: str, depth: int) -> tuple[int, int]:
    if isinstance(value, str):
        return len(value), 0
    if isinstance(value, int) and not isinstance(value, bool) and depth > 0:
        return 0, 1
    if isinstance(value, list) and value and depth < 2:
        counts = [_count_text(item, name, depth + 1) for item in value]
        return sum(c for c, _ in counts), sum(i for _, i in counts)
    raise bad_request(f"'{name}' must be a string, an array of strings or an array of token ids.")


def word(position: int) -> str:
    return WORDS[position % len(WORDS)]


def text(tokens: int) -> str:
    return " ".join(word(position) for position in range(tokens))


def _usage(call: Call) -> Json:
    if call.op == "embeddings":
        return {"prompt_tokens": call.prompt_tokens, "total_tokens": call.prompt_tokens}
    completion = call.completion_tokens * call.choices
    return {
        "prompt_tokens": call.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": call.prompt_tokens + completion,
    }


def _finish_reason(call: Call) -> str:
    return "length" if call.explicit_max else "stop"


def _completion(call: Call) -> Json:
    content, reason = text(call.completion_tokens), _finish_reason(call)
    chat = call.op == "chat"
    choices = [
        {"index": i, "finish_reason": reason, "logprobs": None}
        | ({"message": {"role": "assistant", "content": content}} if chat else {"text": content})
        for i in range(call.choices)
    ]
    answer = {
        "id": f"chatcmpl-{uuid.uuid4().hex}" if chat else f"cmpl-{uuid.uuid4().hex}",
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": call.deployment,
        "choices": choices,
        "usage": _usage(call),
    }
    return answer | ({"prompt_filter_results": [], "system_fingerprint": "fp_simulator"} if chat else {})


def _embeddings(call: Call) -> Json:
    as_base64 = call.body.get("encoding_format") == "base64"
    data = []
    for index, item in enumerate(_inputs(call.body.get("input"))):
        vector = _embedding_vector(item)
        encoded: object = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode() if as_base64 else vector
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    return {"object": "list", "data": data, "model": call.deployment, "usage": _usage(call)}


def _inputs(value: object) -> list[object]:
    """The separate embedding inputs: a list of ids is one input, any other list is several."""
    if isinstance(value, list) and not all(isinstance(item, int) for item in value):
        return list(value)
    return [value]


def _embedding_vector(item: object) -> list[float]:
    """Deterministic vector per input, exactly representable as float32 (tests compare base64)."""
    digest = hashlib.sha256(json.dumps(item).encode()).digest()
    return [(byte - 128) / 128 for byte in digest[:EMBEDDING_DIMS]]


async def _events(ctx: Context, call: Call) -> AsyncIterator[bytes]:
    """The SSE events of one streamed answer, paced by the latency model."""
    chunks = _Chunks(call)
    yield sse(chunks.prompt_filter())
    for position in range(call.completion_tokens):
        if position:
            await ctx.clock.sleep(ctx.per_token)
        for choice in range(call.choices):
            yield sse(chunks.token(choice, position))
    for choice in range(call.choices):
        yield sse(chunks.finish(choice))
    if call.include_usage:
        yield sse(chunks.usage())
    yield DONE


class _Chunks:
    """The JSON chunks of one streamed answer, shaped like Azure's (chat) or OpenAI's legacy completions."""

    def __init__(self, call: Call) -> None:
        self.call = call
        prefix, self.object = (
            ("chatcmpl", "chat.completion.chunk") if call.op == "chat" else ("cmpl", "text_completion")
        )
        self.id = f"{prefix}-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def prompt_filter(self) -> Json:
        # Azure's first chunk: empty choices and ids, carrying only the prompt filter results.
        return self._usage_null(
            {"choices": [], "created": 0, "id": "", "model": "", "object": "", "prompt_filter_results": []}
        )

    def token(self, choice: int, position: int) -> Json:
        delta = word(position) if position == 0 else f" {word(position)}"
        return self._chunk(choice, delta, None, first=position == 0)

    def finish(self, choice: int) -> Json:
        return self._chunk(choice, "", _finish_reason(self.call), first=False)

    def usage(self) -> Json:
        return {**self._base(), "choices": [], "usage": _usage(self.call)}

    def _chunk(self, choice: int, delta: str, reason: str | None, first: bool) -> Json:
        entry: Json = {"index": choice, "finish_reason": reason, "logprobs": None}
        if self.call.op == "chat":
            entry["delta"] = {"role": "assistant", "content": delta} if first else ({"content": delta} if delta else {})
        else:
            entry["text"] = delta
        return self._usage_null({**self._base(), "choices": [entry]})

    def _base(self) -> Json:
        base: Json = {"id": self.id, "object": self.object, "created": self.created, "model": self.call.deployment}
        if self.call.op == "chat":
            base["system_fingerprint"] = "fp_simulator"
        return base

    def _usage_null(self, chunk: Json) -> Json:
        """OpenAI marks every chunk before the usage chunk with usage: null, only when usage was asked for."""
        return {**chunk, "usage": None} if self.call.include_usage else chunk
