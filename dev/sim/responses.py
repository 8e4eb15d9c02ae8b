"""The Responses API on both surfaces: `POST /openai/responses?api-version=...` and `/openai/v1/responses`.

A response is stored in the region that made it (unless `store: false`) with its input items; another region
answers 404 for it, and for a `previous_response_id` or `conversation` it does not hold. With
`include: ["reasoning.encrypted_content"]` the output starts with a reasoning item whose encrypted content is
sealed with this region's secret: sent back to another region (by content, or by id alone) it is a 400, as
Azure cannot decrypt another resource's reasoning. `background: true` answers "queued" and completes after the
generation time; only such a response can be cancelled. Streams follow OpenAI's event sequence from
`response.created` to `response.completed` (no [DONE]).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from dev.sim.containers import CONTAINERS
from dev.sim.context import Context, context
from dev.sim.conversations import CONVERSATIONS, append, item
from dev.sim.errors import INVALID_REQUEST, AzureError, bad_request
from dev.sim.inference import Call, parse_call, text, word
from dev.sim.parse import api_version, deployment, ids, json_body
from dev.sim.router import Collection, Routes, find, require
from dev.sim.store import Store, new_id, page
from dev.sim.streams import Last, Streamed, typed_sse
from dev.sim.surfaces import BOTH
from dev.sim.vector_stores import VECTOR_STORES

Json = dict[str, Any]
ENCRYPTED_REASONING = "reasoning.encrypted_content"
PENDING = ("queued", "in_progress")


@dataclass(frozen=True)
class Inputs:
    """A stored response's input items (GET /responses/{id}/input_items)."""

    items: list[Json]


RESPONSES = Collection("response", "response", "responses", "response_id", BOTH, listed=False, deleted="response")


def mount(routes: Routes) -> None:
    for prefix in RESPONSES.surfaces:
        routes.add("POST", prefix + RESPONSES.path, _create)  # a model operation: the body's model names it
    routes.collection(RESPONSES)
    routes.objects("GET", RESPONSES.item_path + "/input_items", _input_items, RESPONSES.surfaces)
    routes.objects("POST", RESPONSES.item_path + "/cancel", _cancel, RESPONSES.surfaces)


async def _create(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    body = await json_body(request)
    name = deployment(request, body.get("model"))
    ctx.deployments.check(name)
    call = parse_call("responses", name, api_version(request), body)
    conversation = _check_references(request, body)
    headers = await ctx.admit(call)
    inputs = _inputs(body["input"])
    response = _response(ctx, call, conversation)
    if body.get("store") is not False:
        ctx.store.add(RESPONSES.kind, response, payload=Inputs(inputs))
    if conversation is not None:
        append(ctx.store, conversation, [*inputs, *response["output"]])
    if call.stream:
        return Streamed(_events(ctx, response), headers=headers)
    if response["background"]:
        final = dict(response)
        response.update(status="queued", output=[], usage=None)
        ctx.spawn(_complete(ctx, response, final, call.completion_tokens))
        return web.json_response(response, headers=headers)
    await ctx.generate(call.completion_tokens)
    return web.json_response(response, headers=headers)


def _inputs(value: object) -> list[Json]:
    """The input as stored items (parse_call checked it): a string is one user message."""
    entries = value if isinstance(value, list) else [{"role": "user", "content": value}]
    return [item(entry) for entry in entries]


def _check_references(request: web.Request, body: Json) -> str | None:
    """Every object the body names must live here; returns the conversation id, if any."""
    store = context(request).store
    previous, conversation = body.get("previous_response_id"), body.get("conversation")
    if previous is not None and conversation is not None:
        raise bad_request("'previous_response_id' and 'conversation' cannot be used together.")
    if previous is not None and store.get(RESPONSES.kind, str(previous)) is None:
        raise AzureError(
            404,
            "previous_response_not_found",
            f"Previous response with id {str(previous)!r} not found.",
            kind=INVALID_REQUEST,
        )
    conversation_id = conversation.get("id") if isinstance(conversation, dict) else conversation
    if conversation is not None:
        if not isinstance(conversation_id, str):
            raise bad_request("'conversation' must be a conversation id or an object with an 'id'.")
        require(request, CONVERSATIONS, [conversation_id])
    if isinstance(body.get("input"), list):
        for entry in body["input"]:
            if isinstance(entry, dict) and entry.get("type") == "reasoning":
                _check_reasoning(context(request), entry)
    for tool in body.get("tools") or []:
        if isinstance(tool, dict) and tool.get("type") == "file_search":
            require(request, VECTOR_STORES, ids(tool.get("vector_store_ids"), "vector_store_ids"))
        if isinstance(tool, dict) and tool.get("type") == "code_interpreter" and isinstance(tool.get("container"), str):
            require(request, CONTAINERS, [tool["container"]])
    return conversation_id


def seal(secret: bytes, item_id: str) -> str:
    """Opaque encrypted content for a reasoning item, verifiable only with the secret of the region that made it."""
    mac = hmac.new(secret, item_id.encode(), hashlib.sha256).digest()
    return base64.b64encode(mac + item_id.encode()).decode()


def _unseal(secret: bytes, sealed: object) -> bool:
    try:
        raw = base64.b64decode(str(sealed), validate=True)
    except (binascii.Error, ValueError):
        return False
    mac, item_id = raw[:32], raw[32:]
    return hmac.compare_digest(mac, hmac.new(secret, item_id, hashlib.sha256).digest())


def _check_reasoning(ctx: Context, entry: Json) -> None:
    item_id = entry.get("id")
    if "encrypted_content" in entry:
        if not _unseal(ctx.secret, entry["encrypted_content"]):
            raise bad_request(
                f"The encrypted content for item {item_id} could not be verified. "
                "Reason: Encrypted content could not be decrypted or parsed.",
                code="invalid_encrypted_content",
            )
    elif not _made_here(ctx.store, item_id):
        raise bad_request(f"Item with id {item_id!r} not found.", code="invalid_value")


def _made_here(store: Store, item_id: object) -> bool:
    return any(out.get("id") == item_id for response in store.items(RESPONSES.kind) for out in response["output"])


def _response(ctx: Context, call: Call, conversation: str | None) -> Json:
    body = call.body
    output: list[Json] = []
    if ENCRYPTED_REASONING in (body.get("include") or []):
        reasoning_id = new_id("rs_")
        output.append(
            {
                "type": "reasoning",
                "id": reasoning_id,
                "summary": [],
                "encrypted_content": seal(ctx.secret, reasoning_id),
            }
        )
    content = {"type": "output_text", "text": text(call.completion_tokens), "annotations": [], "logprobs": []}
    output.append(
        {"type": "message", "id": new_id("msg_"), "status": "completed", "role": "assistant", "content": [content]}
    )
    return {
        "id": new_id("resp_"),
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "background": body.get("background") is True,
        "model": call.deployment,
        "previous_response_id": body.get("previous_response_id"),
        "conversation": {"id": conversation} if conversation else None,
        "instructions": body.get("instructions"),
        "metadata": body.get("metadata") or {},
        "max_output_tokens": body.get("max_output_tokens"),
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "store": body.get("store") is not False,
        "usage": {
            "input_tokens": call.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": call.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": call.prompt_tokens + call.completion_tokens,
        },
    }


async def _complete(ctx: Context, response: Json, final: Json, tokens: int) -> None:
    """A background response finishes after its generation time, unless cancelled meanwhile."""
    await ctx.generate(tokens)
    if response["status"] in PENDING:
        response.update(final)


async def _events(ctx: Context, response: Json) -> AsyncIterator[bytes]:
    """OpenAI's sequence: created, in_progress, per output item added / parts / deltas / done, completed."""
    numbers = itertools.count()

    def event(kind: str, **data: Any) -> bytes:
        return typed_sse(kind, {**data, "sequence_number": next(numbers)})

    started = {**response, "status": "in_progress", "output": [], "usage": None}
    yield event("response.created", response=started)
    yield event("response.in_progress", response=started)
    for index, out in enumerate(response["output"]):
        if out["type"] != "message":
            yield event("response.output_item.added", output_index=index, item=out)
            yield event("response.output_item.done", output_index=index, item=out)
            continue
        yield event(
            "response.output_item.added", output_index=index, item={**out, "status": "in_progress", "content": []}
        )
        part = out["content"][0]
        where = {"item_id": out["id"], "output_index": index, "content_index": 0}
        yield event("response.content_part.added", **where, part={**part, "text": ""})
        for position in range(len(part["text"].split(" ")) if part["text"] else 0):
            if position:
                await ctx.clock.sleep(ctx.per_token)
            delta = word(position) if position == 0 else f" {word(position)}"
            yield event("response.output_text.delta", **where, delta=delta, logprobs=[])
        yield event("response.output_text.done", **where, text=part["text"], logprobs=[])
        yield event("response.content_part.done", **where, part=part)
        yield event("response.output_item.done", output_index=index, item=out)
    yield Last(event("response.completed", response=response))


async def _input_items(request: web.Request) -> web.StreamResponse:
    response = find(RESPONSES, request)
    inputs = context(request).store.payload(RESPONSES.kind, response["id"], Inputs)
    return web.json_response(page(inputs.items, request.query))


async def _cancel(request: web.Request) -> web.StreamResponse:
    """Only a background response can be cancelled; cancelling one that finished answers it as it is."""
    response = find(RESPONSES, request)
    if not response["background"]:
        raise bad_request("Only responses created with background=true can be cancelled.")
    if response["status"] in PENDING:
        response["status"] = "cancelled"
    return web.json_response(response)
