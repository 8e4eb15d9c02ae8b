"""Assistants, threads, messages, runs and run steps (classic surface: Azure serves the Assistants API on its
dated api-versions, /openai/assistants?api-version=...).

Every id a body names (assistant, files of attachments and tool resources, vector stores) must exist in the
region. A run executes at once, eagerly: with a function tool it stops at `requires_action` with one tool call,
and submitting that call's output completes it; otherwise it writes one assistant message. A streamed run
replays the same transitions as Assistants SSE events (`thread.run.created` ... `thread.run.completed`, then
`event: done` / `data: [DONE]`), pacing the message deltas like a generation. Runs cost no tokens.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from dev.sim.context import Context, context
from dev.sim.errors import bad_request
from dev.sim.files import FILES, named_files
from dev.sim.inference import DEFAULT_MAX_TOKENS, content_chars, text, word
from dev.sim.parse import flag, ids, json_body, positive_int
from dev.sim.router import Collection, Routes, find, require
from dev.sim.store import Store, new_id
from dev.sim.streams import ASSISTANT_DONE, Streamed, assistant_sse
from dev.sim.surfaces import CLASSIC
from dev.sim.vector_stores import VECTOR_STORES

Json = dict[str, Any]
Events = list[tuple[str, Json]]
SURFACES = (CLASSIC,)
ASSISTANT_FIELDS = (
    "model",
    "name",
    "description",
    "instructions",
    "tools",
    "tool_resources",
    "metadata",
    "temperature",
    "top_p",
    "response_format",
)
CANCELLABLE = ("queued", "in_progress", "requires_action")


def _check_resources(request: web.Request, body: Json) -> None:
    """tool_resources may name only this region's files and vector stores."""
    resources = body.get("tool_resources") or {}
    if not isinstance(resources, dict):
        raise bad_request("'tool_resources' must be an object.")
    named_files(request, resources.get("code_interpreter") or {})
    search = resources.get("file_search") or {}
    require(request, VECTOR_STORES, ids(search.get("vector_store_ids"), "vector_store_ids"))


async def _create_assistant(request: web.Request, parent: Json | None) -> Json:
    body = await json_body(request)
    if not isinstance(body.get("model"), str):
        raise bad_request("Missing required parameter: 'model'.")
    _check_resources(request, body)
    assistant = {"id": new_id("asst_"), "object": "assistant", "created_at": int(time.time())}
    assistant |= {name: body.get(name) for name in ASSISTANT_FIELDS}
    assistant |= {"tools": body.get("tools") or [], "metadata": body.get("metadata") or {}}
    return context(request).store.add(ASSISTANTS.kind, assistant)


def _thread(request: web.Request, body: Json) -> Json:
    _check_resources(request, body)
    messages = body.get("messages") or []
    if not isinstance(messages, list):
        raise bad_request("'messages' must be an array.")
    for message in messages:
        _check_message(request, message)
    thread: Json = {
        "id": new_id("thread_"),
        "object": "thread",
        "created_at": int(time.time()),
        "metadata": body.get("metadata") or {},
        "tool_resources": body.get("tool_resources") or {},
    }
    store = context(request).store
    store.add(THREADS.kind, thread)
    for message in messages:
        _add_message(store, thread["id"], message)
    return thread


async def _create_thread(request: web.Request, parent: Json | None) -> Json:
    return _thread(request, await json_body(request))


def _check_message(request: web.Request, body: object) -> None:
    if not isinstance(body, dict) or body.get("role") not in ("user", "assistant"):
        raise bad_request("A message needs a 'role' of 'user' or 'assistant' and a 'content'.")
    attachments = body.get("attachments") or []
    if not isinstance(attachments, list) or not all(isinstance(a, dict) for a in attachments):
        raise bad_request("'attachments' must be an array of objects.")
    require(request, FILES, [a["file_id"] for a in attachments if isinstance(a.get("file_id"), str)])


def _content(value: object) -> list[Json]:
    """Assistants content blocks: text becomes {"type": "text", "text": {"value", "annotations"}}."""
    if isinstance(value, str):
        value = [{"type": "text", "text": value}]
    if not isinstance(value, list):
        raise bad_request("'content' must be a string or an array of content parts.")
    return [
        {"type": "text", "text": {"value": p["text"], "annotations": []}}
        if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        else p
        for p in value
    ]


def _message(thread_id: str, role: str, content: list[Json], **extra: Any) -> Json:
    now = int(time.time())
    return {
        "id": new_id("msg_"),
        "object": "thread.message",
        "created_at": now,
        "thread_id": thread_id,
        "role": role,
        "content": content,
        "attachments": [],
        "metadata": {},
        "assistant_id": None,
        "run_id": None,
        "status": "completed",
        "completed_at": now,
        "incomplete_at": None,
        "incomplete_details": None,
    } | extra


def _add_message(store: Store, thread_id: str, body: Json) -> Json:
    message = _message(
        thread_id,
        body["role"],
        _content(body.get("content")),
        attachments=body.get("attachments") or [],
        metadata=body.get("metadata") or {},
    )
    return store.add(MESSAGES.kind, message, parent=thread_id)


async def _create_message(request: web.Request, parent: Json | None) -> Json:
    assert parent is not None
    body = await json_body(request)
    _check_message(request, body)
    return _add_message(context(request).store, parent["id"], body)


def _new_run(request: web.Request, thread: Json, body: Json) -> Json:
    """A queued run of an assistant of this region, with its extra messages added to the thread."""
    if not isinstance(body.get("assistant_id"), str):
        raise bad_request("Missing required parameter: 'assistant_id'.")
    require(request, ASSISTANTS, [body["assistant_id"]])
    store = context(request).store
    assistant = store.get(ASSISTANTS.kind, body["assistant_id"])
    assert assistant is not None
    positive_int(body.get("max_completion_tokens"), "max_completion_tokens", DEFAULT_MAX_TOKENS)
    extra = body.get("additional_messages") or []
    for message in extra:
        _check_message(request, message)
    for message in extra:
        _add_message(store, thread["id"], message)
    now = int(time.time())
    run = {
        "id": new_id("run_"),
        "object": "thread.run",
        "created_at": now,
        "assistant_id": assistant["id"],
        "thread_id": thread["id"],
        "status": "queued",
        "model": body.get("model") or assistant["model"],
        "instructions": body.get("instructions") or assistant["instructions"] or "",
        "tools": body.get("tools") or assistant["tools"],
        "metadata": body.get("metadata") or {},
        "parallel_tool_calls": True,
        "required_action": None,
        "last_error": None,
        "incomplete_details": None,
        "started_at": None,
        "completed_at": None,
        "cancelled_at": None,
        "failed_at": None,
        "expires_at": now + 600,
        "usage": None,
        "max_prompt_tokens": body.get("max_prompt_tokens"),
        "max_completion_tokens": body.get("max_completion_tokens"),
        "truncation_strategy": {"type": "auto", "last_messages": None},
        "response_format": "auto",
        "tool_choice": "auto",
        "temperature": 1.0,
        "top_p": 1.0,
    }
    return store.add(RUNS.kind, run, parent=thread["id"])


def _step(store: Store, run: Json, details: Json) -> Json:
    step = {
        "id": new_id("step_"),
        "object": "thread.run.step",
        "created_at": int(time.time()),
        "assistant_id": run["assistant_id"],
        "thread_id": run["thread_id"],
        "run_id": run["id"],
        "type": details["type"],
        "status": "in_progress",
        "step_details": details,
        "last_error": None,
        "cancelled_at": None,
        "completed_at": None,
        "expired_at": None,
        "failed_at": None,
        "metadata": {},
        "usage": None,
    }
    return store.add(STEPS.kind, step, parent=run["id"])


def _execute(store: Store, run: Json, events: Events, *, outputs_submitted: bool) -> None:
    """Take a queued run as far as it goes, recording every transition as its stream event."""

    def record(event: str, obj: Json) -> None:
        events.append((event, copy.deepcopy(obj)))

    run.update(status="in_progress", started_at=run["started_at"] or int(time.time()))
    record("thread.run.in_progress", run)
    functions = [t["function"] for t in run["tools"] if isinstance(t, dict) and t.get("type") == "function"]
    if functions and not outputs_submitted:
        function = {"name": functions[0]["name"], "arguments": "{}"}
        call: Json = {"id": new_id("call_"), "type": "function", "function": function}
        step_call = {**call, "function": {**function, "output": None}}
        step = _step(store, run, {"type": "tool_calls", "tool_calls": [step_call]})
        record("thread.run.step.created", step)
        record("thread.run.step.in_progress", step)
        run.update(
            status="requires_action",
            required_action={"type": "submit_tool_outputs", "submit_tool_outputs": {"tool_calls": [call]}},
        )
        record("thread.run.requires_action", run)
        return
    tokens = run["max_completion_tokens"] or DEFAULT_MAX_TOKENS
    answer = _message(run["thread_id"], "assistant", [], assistant_id=run["assistant_id"], run_id=run["id"])
    step = _step(store, run, {"type": "message_creation", "message_creation": {"message_id": answer["id"]}})
    record("thread.run.step.created", step)
    record("thread.run.step.in_progress", step)
    record("thread.message.created", {**answer, "status": "in_progress", "completed_at": None})
    record("thread.message.in_progress", {**answer, "status": "in_progress", "completed_at": None})
    for position in range(tokens):
        value = word(position) if position == 0 else f" {word(position)}"
        block = {"index": 0, "type": "text", "text": {"value": value, "annotations": []}}
        events.append(
            (
                "thread.message.delta",
                {"id": answer["id"], "object": "thread.message.delta", "delta": {"content": [block]}},
            )
        )
    answer["content"] = [{"type": "text", "text": {"value": text(tokens), "annotations": []}}]
    store.add(MESSAGES.kind, answer, parent=run["thread_id"])
    record("thread.message.completed", answer)
    now = int(time.time())
    usage = _usage(store, run["thread_id"], tokens)
    step.update(status="completed", completed_at=now, usage=usage)
    record("thread.run.step.completed", step)
    run.update(status="completed", completed_at=now, required_action=None, usage=usage)
    record("thread.run.completed", run)


def _usage(store: Store, thread_id: str, completion: int) -> Json:
    """Reported, never charged: runs cost no tokens in the simulator."""
    messages = store.items(MESSAGES.kind, thread_id)
    chars = sum(content_chars([b["text"] for b in m["content"] if b.get("type") == "text"]) for m in messages)
    prompt = math.ceil(chars / 4) + 4 * len(messages)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _answer(ctx: Context, run: Json, events: Events, stream: bool) -> web.StreamResponse:
    return Streamed(_replay(ctx, events)) if stream else web.json_response(run)


async def _replay(ctx: Context, events: Events) -> AsyncIterator[bytes]:
    deltas = 0
    for event, data in events:
        if event == "thread.message.delta":
            if deltas:
                await ctx.clock.sleep(ctx.per_token)
            deltas += 1
        yield assistant_sse(event, data)
    yield ASSISTANT_DONE


def _start(request: web.Request, thread: Json, body: Json) -> web.StreamResponse:
    store = context(request).store
    run = _new_run(request, thread, body)
    events: Events = [("thread.run.created", copy.deepcopy(run)), ("thread.run.queued", copy.deepcopy(run))]
    _execute(store, run, events, outputs_submitted=False)
    return _answer(context(request), run, events, flag(body.get("stream")))


async def _create_run(request: web.Request) -> web.StreamResponse:
    thread = find(THREADS, request)
    return _start(request, thread, await json_body(request))


async def _create_thread_and_run(request: web.Request) -> web.StreamResponse:
    body = await json_body(request)
    thread_body = body.get("thread") or {}
    if not isinstance(thread_body, dict):
        raise bad_request("'thread' must be an object.")
    if isinstance(body.get("assistant_id"), str):
        require(request, ASSISTANTS, [body["assistant_id"]])
    _check_resources(request, body)  # the run's own tool_resources
    return _start(request, _thread(request, thread_body), body)


async def _submit_tool_outputs(request: web.Request) -> web.StreamResponse:
    run = find(RUNS, request)
    body = await json_body(request)
    if run["status"] != "requires_action":
        raise bad_request(f"Runs in status {run['status']!r} do not accept tool outputs.")
    outputs = body.get("tool_outputs")
    expected = {c["id"] for c in run["required_action"]["submit_tool_outputs"]["tool_calls"]}
    if not isinstance(outputs, list) or {o.get("tool_call_id") for o in outputs if isinstance(o, dict)} != expected:
        raise bad_request(f"Expected tool outputs for call ids {sorted(expected)}.")
    store = context(request).store
    events: Events = []
    for step in store.items(STEPS.kind, run["id"]):
        if step["type"] == "tool_calls" and step["status"] == "in_progress":
            by_call = {o["tool_call_id"]: o.get("output") for o in outputs}
            for call in step["step_details"]["tool_calls"]:
                call["function"]["output"] = by_call.get(call["id"])
            step.update(status="completed", completed_at=int(time.time()))
            events.append(("thread.run.step.completed", copy.deepcopy(step)))
    run.update(status="queued", required_action=None)
    events.append(("thread.run.queued", copy.deepcopy(run)))
    _execute(store, run, events, outputs_submitted=True)
    return _answer(context(request), run, events, flag(body.get("stream")))


async def _cancel(request: web.Request) -> web.StreamResponse:
    run = find(RUNS, request)
    if run["status"] not in CANCELLABLE:
        raise bad_request(f"Cannot cancel run with status {run['status']!r}.")
    run.update(status="cancelled", cancelled_at=int(time.time()), required_action=None)
    return web.json_response(run)


ASSISTANTS = Collection(
    "assistant",
    "assistant",
    "assistants",
    "assistant_id",
    SURFACES,
    create=_create_assistant,
    updates=ASSISTANT_FIELDS,
    check=_check_resources,
)
THREADS = Collection(
    "thread",
    "thread",
    "threads",
    "thread_id",
    SURFACES,
    create=_create_thread,
    updates=("metadata", "tool_resources"),
    check=_check_resources,
    listed=False,
)
MESSAGES = Collection(
    "thread.message",
    "message",
    "messages",
    "message_id",
    SURFACES,
    parent=THREADS,
    create=_create_message,
    updates=("metadata",),
)
RUNS = Collection(
    "thread.run", "run", "runs", "run_id", SURFACES, parent=THREADS, updates=("metadata",), deletable=False
)
STEPS = Collection("thread.run.step", "run step", "steps", "step_id", SURFACES, parent=RUNS, deletable=False)


def mount(routes: Routes) -> None:
    routes.collection(ASSISTANTS)
    routes.objects("POST", "threads/runs", _create_thread_and_run, SURFACES)  # before threads/{thread_id}
    routes.objects("POST", RUNS.path, _create_run, SURFACES)
    for collection in (THREADS, MESSAGES, RUNS, STEPS):
        routes.collection(collection)
    routes.objects("POST", RUNS.item_path + "/cancel", _cancel, SURFACES)
    routes.objects("POST", RUNS.item_path + "/submit_tool_outputs", _submit_tool_outputs, SURFACES)
