"""Simulated Azure OpenAI regions for local runs, tests and benchmarks.

Each `SimRegion` is one regional Azure OpenAI resource on its own port. It mimics what the gateway depends on
(see azure-openai-facts.md): estimate-based admission against per-deployment TPM/RPM windows, 429s with
Retry-After, Azure-shaped errors and headers, SSE streaming, and fault switches for resilience tests. All
durations are clock seconds, so a `ScaledClock` compresses minutes of quota behaviour into seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import math
import signal
import struct
import sys
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from shared.clock import Clock, ScaledClock

Json = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

TOKEN_WINDOW = 60.0  # TPM is enforced over a sliding minute
REQUEST_WINDOW = 10.0  # RPM is enforced as rpm/6 per 10 s, like Microsoft's simulator
DEFAULT_MAX_TOKENS = 16  # what Microsoft's simulator charges when max_tokens is absent
EMBEDDING_DIMS = 8
CAPACITY_RETRY_AFTER = 10  # clock seconds a "high demand" 429 asks for
DROP_AFTER_CHUNKS = 3
STREAM_OPTIONS_SINCE = "2024-09-01"  # older api-versions reject stream_options
SHUTDOWN_TIMEOUT = 1.0  # real seconds stop() waits for in-flight responses
OPERATIONS = {
    "chat": "ChatCompletions_Create",
    "completions": "Completions_Create",
    "embeddings": "Embeddings_Create",
    "responses": "Responses_Create",
}
WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet")
DONE = b"data: [DONE]\n\n"


@dataclass(frozen=True)
class SimDeployment:
    """One deployment in one region."""

    name: str
    tpm: int
    rpm: int | None = None  # None: 6 RPM per 1000 TPM, Azure's default ratio

    @property
    def requests_per_window(self) -> int:
        rpm = self.rpm if self.rpm is not None else self.tpm * 6 // 1000
        return max(1, rpm // 6)


@dataclass
class Faults:
    """Fault switches, flipped at runtime by tests and benchmarks."""

    down: bool = False  # listening socket closed; use SimRegion.set_down to change it
    slow: float = 0.0  # extra clock seconds before answering
    error_500: bool = False
    drop_mid_stream: bool = False
    capacity_429: bool = False
    # Provisioned (PTU) deployments report utilisation, not x-ratelimit-remaining-*: no hints to follow.
    no_remaining_headers: bool = False


@dataclass
class DeploymentStats:
    admitted_requests: int = 0
    admitted_tokens: int = 0
    throttled_quota: int = 0
    throttled_capacity: int = 0
    errors_500: int = 0


class AzureError(Exception):
    """An Azure-shaped error answer: {"error": {"code", "message"}} with a status."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def response(self) -> web.Response:
        body = {"error": {"code": self.code, "message": self.message}}
        return web.json_response(body, status=self.status, headers=self.headers)


def bad_request(message: str) -> AzureError:
    return AzureError(400, "BadRequest", message)


@dataclass(frozen=True)
class Throttle:
    """Why a request was refused: clock seconds until it would fit, per tripped limit."""

    token_wait: float | None
    request_wait: float | None

    @property
    def wait(self) -> float:
        return max(w for w in (self.token_wait, self.request_wait) if w is not None)


class Limiter:
    """Sliding-window TPM and RPM admission for one deployment, charged at arrival."""

    def __init__(self, deployment: SimDeployment) -> None:
        self.tpm = deployment.tpm
        self.max_requests = deployment.requests_per_window
        self._tokens: deque[tuple[float, int]] = deque()
        self._requests: deque[float] = deque()

    def admit(self, now: float, cost: int) -> Throttle | None:
        self._expire(now)
        token_wait = self._token_wait(now, cost)
        request_wait = None
        if len(self._requests) >= self.max_requests:
            request_wait = self._requests[len(self._requests) - self.max_requests] + REQUEST_WINDOW - now
        if token_wait is not None or request_wait is not None:
            return Throttle(token_wait, request_wait)
        self._tokens.append((now, cost))
        self._requests.append(now)
        return None

    def remaining(self) -> tuple[int, int]:
        """Tokens left in the minute window, requests left in the 10 s window."""
        used = sum(tokens for _, tokens in self._tokens)
        return max(0, self.tpm - used), max(0, self.max_requests - len(self._requests))

    def clear(self) -> None:
        self._tokens.clear()
        self._requests.clear()

    def _expire(self, now: float) -> None:
        while self._tokens and self._tokens[0][0] + TOKEN_WINDOW <= now:
            self._tokens.popleft()
        while self._requests and self._requests[0] + REQUEST_WINDOW <= now:
            self._requests.popleft()

    def _token_wait(self, now: float, cost: int) -> float | None:
        """None if `cost` fits now, else the time until enough old charges expire for it."""
        excess = sum(tokens for _, tokens in self._tokens) + cost - self.tpm
        if excess <= 0:
            return None
        if cost > self.tpm:  # can never fit; ask for a full window rather than a busy loop
            return TOKEN_WINDOW
        for charged_at, tokens in self._tokens:
            excess -= tokens
            if excess <= 0:
                return charged_at + TOKEN_WINDOW - now
        raise AssertionError("unreachable: cost <= tpm frees enough")


@dataclass(frozen=True)
class Call:
    """A parsed data-plane request: what it costs and what to generate."""

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


class SimRegion:
    """One regional Azure OpenAI resource: a set of deployments behind one endpoint."""

    def __init__(
        self,
        name: str,
        deployments: Sequence[SimDeployment],
        clock: Clock,
        *,
        ttft: float = 0.3,
        per_token: float = 0.005,
        api_key: str | None = None,
    ) -> None:
        self.name = name
        self.clock = clock
        self.ttft = ttft
        self.per_token = per_token
        self.api_key = api_key
        self.faults = Faults()
        self._limiters = {d.name: Limiter(d) for d in deployments}
        self._stats = {d.name: DeploymentStats() for d in deployments}
        # Stateful objects live in the region that created them, as in Azure: another region answers 404.
        self._responses: dict[str, Json] = {}
        self._files: dict[str, tuple[Json, bytes]] = {}
        self._batches: dict[str, Json] = {}
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._host = "127.0.0.1"
        self._port = 0
        self.app = self._build_app()

    @property
    def stats(self) -> dict[str, DeploymentStats]:
        """Live counters per deployment (reset() replaces them)."""
        return dict(self._stats)

    @property
    def endpoint(self) -> str:
        return f"http://{self._host}:{self._port}"

    def reset(self) -> None:
        """Forget all charges and counters (between benchmark scenarios)."""
        for limiter in self._limiters.values():
            limiter.clear()
        self._stats = {name: DeploymentStats() for name in self._stats}

    def snapshot(self) -> Json:
        deployments = {name: asdict(stats) for name, stats in self._stats.items()}
        return {"region": self.name, "faults": asdict(self.faults), "deployments": deployments}

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await self._runner.setup()
        self._host, self._port = host, port
        await self._listen()
        return self.endpoint

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self._runner, self._site = None, None

    async def set_down(self, down: bool) -> None:
        await self._set_down(down, spare=None)

    async def update_faults(self, update: Json, *, spare: RequestHandler | None = None) -> None:
        """Partial, validated update of `faults`; `down` really closes or reopens the port."""
        _check_faults(update)
        for name, value in update.items():
            if name != "down":
                setattr(self.faults, name, value)
        if "down" in update:
            await self._set_down(update["down"], spare)

    async def _set_down(self, down: bool, spare: RequestHandler | None) -> None:
        """Close (or reopen, same port) the listener; going down also cuts every open connection but `spare`."""
        self.faults.down = down
        if not down:
            if self._site is None and self._runner is not None:
                await self._listen()
            return
        if self._site is not None:
            await self._site.stop()
            self._site = None
        server = self._runner.server if self._runner is not None else None
        for connection in server.connections if server is not None else []:
            if connection is spare:
                connection.close()  # finish the reply that asked for the outage, then hang up
            else:
                connection.force_close()  # keep-alive clients must not reach a "down" region

    async def _listen(self) -> None:
        assert self._runner is not None
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        self._site = site
        self._port = self._runner.addresses[0][1]  # the real port when 0 was asked

    def _build_app(self) -> web.Application:
        app = web.Application()
        app.on_response_prepare.append(self._stamp)
        for prefix in ("/openai/deployments/{deployment}", "/openai/v1"):
            app.router.add_post(f"{prefix}/chat/completions", self._route("chat"))
            app.router.add_post(f"{prefix}/embeddings", self._route("embeddings"))
        app.router.add_post("/openai/deployments/{deployment}/completions", self._route("completions"))
        app.router.add_post("/openai/v1/responses", self._route("responses"))
        app.router.add_get("/openai/v1/responses/{response_id}", self._get_response)
        app.router.add_delete("/openai/v1/responses/{response_id}", self._delete_response)
        # Files are on both surfaces: AzureOpenAI(api_version=...) uses /openai/files?api-version=...
        for prefix in ("/openai", "/openai/v1"):
            app.router.add_post(f"{prefix}/files", self._stateful(self._upload_file))
            app.router.add_get(f"{prefix}/files", self._stateful(self._list_files))
            app.router.add_get(f"{prefix}/files/{{file_id}}", self._stateful(self._get_file))
            app.router.add_delete(f"{prefix}/files/{{file_id}}", self._stateful(self._delete_file))
            app.router.add_get(f"{prefix}/files/{{file_id}}/content", self._stateful(self._file_content))
            app.router.add_post(f"{prefix}/batches", self._stateful(self._create_batch))
            app.router.add_get(f"{prefix}/batches", self._stateful(self._list_batches))
            app.router.add_get(f"{prefix}/batches/{{batch_id}}", self._stateful(self._get_batch))
            app.router.add_post(f"{prefix}/batches/{{batch_id}}/cancel", self._stateful(self._cancel_batch))
        app.router.add_get("/openai/models", self._models)
        app.router.add_get("/openai/v1/models", self._models)
        app.router.add_get("/_sim/stats", self._get_stats)
        app.router.add_post("/_sim/faults", self._post_faults)
        app.router.add_post("/_sim/reset", self._post_reset)
        return app

    async def _stamp(self, request: web.Request, response: web.StreamResponse) -> None:
        """Azure's tracing headers, on every answer including errors and streams."""
        response.headers["x-ms-region"] = self.name
        response.headers["apim-request-id"] = str(uuid.uuid4())
        response.headers["x-request-id"] = str(uuid.uuid4())

    def _route(self, op: str) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                call, headers = await self._admit(request, op)
            except AzureError as error:
                await self.clock.sleep(self.faults.slow)
                return error.response()
            await self.clock.sleep(self.faults.slow + self.ttft)
            if call.op == "responses":
                response = self._store_response(call)
                if call.stream:
                    return await self._stream(request, headers, self._response_events(response, call))
                await self.clock.sleep(self.per_token * call.completion_tokens)
                return web.json_response(response, headers=headers)
            if call.stream:
                return await self._stream(request, headers, self._events(call))
            await self.clock.sleep(self.per_token * call.completion_tokens)
            return web.json_response(_completion(call), headers=headers)

        return handle

    async def _admit(self, request: web.Request, op: str) -> tuple[Call, dict[str, str]]:
        """Validate, apply faults and charge the limiter, in Azure's order; raise the error to answer.

        Returns the call and its rate-limit headers, taken right after charging it.
        """
        self._authorize(request)
        on_v1 = "deployment" not in request.match_info
        api_version = "v1" if on_v1 else _api_version(request)
        body = await _json_body(request)
        name = _body_model(body) if on_v1 else request.match_info["deployment"]
        limiter = self._limiters.get(name)
        if limiter is None:
            raise AzureError(
                404,
                "DeploymentNotFound",
                "The API deployment for this resource does not exist. "
                "If you created the deployment within the last 5 minutes, please wait a moment and try again.",
            )
        call = _parse_call(op, name, api_version, body)
        previous = body.get("previous_response_id")
        if op == "responses" and previous is not None and previous not in self._responses:
            raise AzureError(
                404, "previous_response_not_found", f"Previous response with id {str(previous)!r} not found."
            )
        stats = self._stats[name]
        if self.faults.error_500:
            stats.errors_500 += 1
            raise _server_error()
        if self.faults.capacity_429:
            stats.throttled_capacity += 1
            raise _capacity_error(call)
        throttle = limiter.admit(self.clock.now(), call.cost)
        if throttle is not None:
            stats.throttled_quota += 1
            raise _quota_error(call, throttle)
        stats.admitted_requests += 1
        stats.admitted_tokens += call.cost
        tokens_left, requests_left = limiter.remaining()
        if self.faults.no_remaining_headers:
            return call, {}
        return call, {
            "x-ratelimit-remaining-tokens": str(tokens_left),
            "x-ratelimit-remaining-requests": str(requests_left),
        }

    def _authorize(self, request: web.Request) -> None:
        key = request.headers.get("api-key")
        key_ok = bool(key) and (self.api_key is None or key == self.api_key)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if not key_ok and not (scheme.lower() == "bearer" and token.strip()):
            raise AzureError(
                401,
                "401",
                "Access denied due to invalid subscription key or wrong API endpoint. "
                "Make sure to provide a valid key for an active subscription and use a correct "
                "regional API endpoint for your resource.",
            )

    async def _stream(
        self, request: web.Request, headers: dict[str, str], events: AsyncIterator[bytes]
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={**headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        index = 0
        try:
            async for event in events:
                if self.faults.drop_mid_stream and (index > DROP_AFTER_CHUNKS or event == DONE):
                    _abort(request)
                    return response
                await response.write(event)
                index += 1
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client hung up mid-stream: nothing left to answer, and not a server error
        return response

    async def _events(self, call: Call) -> AsyncIterator[bytes]:
        """The SSE events of one streamed answer, paced by the latency model."""
        chunks = _Chunks(call)
        yield _sse(chunks.prompt_filter())
        for position in range(call.completion_tokens):
            if position:
                await self.clock.sleep(self.per_token)
            for choice in range(call.choices):
                yield _sse(chunks.token(choice, position))
        for choice in range(call.choices):
            yield _sse(chunks.finish(choice))
        if call.include_usage:
            yield _sse(chunks.usage())
        yield DONE

    async def _response_events(self, response: Json, call: Call) -> AsyncIterator[bytes]:
        """A Responses stream: created, one delta per token, completed (no [DONE], unlike chat)."""
        text = response["output"][0]["content"][0]["text"]
        created = {**response, "status": "in_progress", "output": [], "usage": None}
        yield _typed_sse("response.created", {"response": created})
        for position, word in enumerate(text.split(" ")):
            if position:
                await self.clock.sleep(self.per_token)
            delta = word if position == 0 else f" {word}"
            yield _typed_sse("response.output_text.delta", {"output_index": 0, "content_index": 0, "delta": delta})
        yield _typed_sse("response.completed", {"response": response})

    def _store_response(self, call: Call) -> Json:
        response = _response(call)
        self._responses[response["id"]] = response
        return response

    async def _get_response(self, request: web.Request) -> web.Response:
        try:
            self._authorize(request)
            return web.json_response(self._stored_response(request))
        except AzureError as error:
            return error.response()

    async def _delete_response(self, request: web.Request) -> web.Response:
        try:
            self._authorize(request)
            response_id = self._stored_response(request)["id"]
        except AzureError as error:
            return error.response()
        del self._responses[response_id]
        return web.json_response({"id": response_id, "object": "response", "deleted": True})

    def _stored_response(self, request: web.Request) -> Json:
        response_id = request.match_info["response_id"]
        response = self._responses.get(response_id)
        if response is None:
            raise AzureError(404, "not_found", f"No response found with id {response_id!r}.")
        return response

    def _stateful(self, handler: Handler) -> Handler:
        """Files and batches: authenticated, api-version on the classic surface, and the 500 fault applies."""

        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                self._authorize(request)
                if not request.path.startswith("/openai/v1/"):
                    _api_version(request)
                if self.faults.error_500:
                    raise _server_error()
                return await handler(request)
            except AzureError as error:
                return error.response()

        return handle

    async def _upload_file(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        purpose, upload = form.get("purpose"), form.get("file")
        if not isinstance(purpose, str) or not isinstance(upload, web.FileField):
            raise bad_request("A file upload needs the multipart fields 'purpose' and 'file'.")
        content = upload.file.read()
        file = {
            "id": f"file-{uuid.uuid4().hex}",
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": upload.filename,
            "purpose": purpose,
            "status": "processed",
        }
        self._files[file["id"]] = (file, content)
        return web.json_response(file)

    async def _list_files(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(_page(request, [file for file, _ in self._files.values()], default_limit=10_000))

    async def _get_file(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self._stored_file(request)[0])

    async def _file_content(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=self._stored_file(request)[1], content_type="application/octet-stream")

    async def _delete_file(self, request: web.Request) -> web.StreamResponse:
        file_id = self._stored_file(request)[0]["id"]
        del self._files[file_id]
        return web.json_response({"id": file_id, "object": "file", "deleted": True})

    def _stored_file(self, request: web.Request) -> tuple[Json, bytes]:
        file_id = request.match_info["file_id"]
        stored = self._files.get(file_id)
        if stored is None:
            raise AzureError(404, "not_found", f"File with id {file_id!r} was not found.")
        return stored

    async def _create_batch(self, request: web.Request) -> web.StreamResponse:
        """A batch reads its input file where it is created: a file stored in another region is a 404."""
        body = await _json_body(request)
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not isinstance(body.get(name), str):
                raise bad_request(f"Missing required parameter: {name!r}.")
        if body["input_file_id"] not in self._files:
            raise AzureError(404, "not_found", f"File with id {body['input_file_id']!r} was not found.")
        created = int(time.time())
        batch = {
            "id": f"batch_{uuid.uuid4()}",
            "object": "batch",
            "endpoint": body["endpoint"],
            "errors": None,
            "input_file_id": body["input_file_id"],
            "completion_window": body["completion_window"],
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": created,
            "expires_at": created + 24 * 3600,
            "cancelling_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": body.get("metadata"),
        }
        self._batches[batch["id"]] = batch
        return web.json_response(batch)

    async def _list_batches(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(_page(request, list(self._batches.values()), default_limit=20))

    async def _get_batch(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self._stored_batch(request))

    async def _cancel_batch(self, request: web.Request) -> web.StreamResponse:
        batch = self._stored_batch(request)
        batch.update(status="cancelling", cancelling_at=int(time.time()))
        return web.json_response(batch)

    def _stored_batch(self, request: web.Request) -> Json:
        batch_id = request.match_info["batch_id"]
        batch = self._batches.get(batch_id)
        if batch is None:
            raise AzureError(404, "not_found", f"Batch with id {batch_id!r} was not found.")
        return batch

    async def _models(self, request: web.Request) -> web.Response:
        """The health probe's target: authenticated, free, never rate limited."""
        try:
            self._authorize(request)
            if request.path.startswith("/openai/models"):
                _api_version(request)
            if self.faults.error_500:
                raise _server_error()
        except AzureError as error:
            await self.clock.sleep(self.faults.slow)
            return error.response()
        await self.clock.sleep(self.faults.slow)
        created = int(time.time())
        data = [{"id": name, "object": "model", "created": created, "owned_by": "system"} for name in self._limiters]
        return web.json_response({"object": "list", "data": data})

    async def _get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.snapshot())

    async def _post_faults(self, request: web.Request) -> web.Response:
        return await _faults_reply(self, request, spare=request.protocol)

    async def _post_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response(self.snapshot())


async def _faults_reply(region: SimRegion, request: web.Request, spare: RequestHandler | None) -> web.Response:
    try:
        await region.update_faults(await _json_body(request), spare=spare)
    except AzureError as error:
        return error.response()
    return web.json_response(region.snapshot())


def _check_faults(update: Json) -> None:
    known = {f.name for f in fields(Faults)}
    for name, value in update.items():
        if name not in known:
            raise bad_request(f"Unknown fault {name!r}; known: {sorted(known)}")
        number = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
        if not (number if name == "slow" else isinstance(value, bool)):
            raise bad_request(f"Invalid value for fault {name!r}: {value!r}")


def _abort(request: web.Request) -> None:
    """Cut the TCP connection mid-body so the client sees a broken chunked stream."""
    if request.transport is not None:
        request.transport.abort()


# --- request parsing ------------------------------------------------------------------------------------------


def _api_version(request: web.Request) -> str:
    version = request.query.get("api-version")
    if not version:
        raise AzureError(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )
    return version


def _page(request: web.Request, items: list[Json], *, default_limit: int) -> Json:
    """One page of a list endpoint: newest first, `after` an id of the previous page, `limit` items."""
    items = sorted(reversed(items), key=lambda item: int(item["created_at"]), reverse=True)  # stable: ties newest first
    after = request.query.get("after")
    if after is not None:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    limit_text = request.query.get("limit", str(default_limit))
    if not limit_text.isdigit() or int(limit_text) < 1:
        raise bad_request(f"Invalid limit {limit_text!r}.")
    limit = int(limit_text)
    data = items[:limit]
    first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
    return {"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": len(items) > limit}


async def _json_body(request: web.Request) -> Json:
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError) as error:
        raise bad_request(f"We could not parse the JSON body of your request. ({error})") from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    return body


def _body_model(body: Json) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is a required property.")
    return model


def _parse_call(op: str, deployment: str, api_version: str, body: Json) -> Call:
    if op == "embeddings":
        return Call(
            op,
            deployment,
            api_version,
            body,
            _text_tokens(body.get("input"), "input"),
            0,
            1,
            explicit_max=False,
            stream=False,
            include_usage=False,
        )
    if op == "chat":
        prompt = _chat_tokens(body.get("messages"))
    elif op == "responses":
        prompt = _response_input_tokens(body.get("input"))
    else:
        prompt = _text_tokens(body.get("prompt"), "prompt")
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens", body.get("max_output_tokens")))
    stream = body.get("stream") is True
    return Call(
        op,
        deployment,
        api_version,
        body,
        prompt,
        _positive_int(max_tokens, "max_tokens", DEFAULT_MAX_TOKENS),
        _positive_int(body.get("n"), "n", 1),
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


def _positive_int(value: object, name: str, default: int) -> int:
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise bad_request(f"'{name}' must be a positive integer.")
    return value


def _chat_tokens(messages: object) -> int:
    """Azure-like estimate: a quarter token per character of content plus 4 per message."""
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise bad_request("'messages' must be a non-empty array of message objects.")
    chars = sum(_content_chars(m.get("content")) for m in messages)
    return math.ceil(chars / 4) + 4 * len(messages)


def _response_input_tokens(value: object) -> int:
    """Responses `input`: a string, or a list of message items counted like chat messages."""
    return _text_tokens(value, "input") if isinstance(value, str) else _chat_tokens(value)


def _content_chars(content: object) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):  # content parts; only text parts count
        return sum(len(p["text"]) for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return 0


def _text_tokens(value: object, name: str) -> int:
    """A string, a list of strings, token ids or lists of token ids: chars/4, one token per id."""
    chars, ids = _count_text(value, name, depth=0)
    return math.ceil(chars / 4) + ids


def _count_text(value: object, name: str, depth: int) -> tuple[int, int]:
    if isinstance(value, str):
        return len(value), 0
    if isinstance(value, int) and not isinstance(value, bool) and depth > 0:
        return 0, 1
    if isinstance(value, list) and value and depth < 2:
        counts = [_count_text(item, name, depth + 1) for item in value]
        return sum(c for c, _ in counts), sum(i for _, i in counts)
    raise bad_request(f"'{name}' must be a string, an array of strings or an array of token ids.")


def _inputs(value: object) -> list[object]:
    """The separate embedding inputs: a list of ids is one input, any other list is several."""
    if isinstance(value, list) and not all(isinstance(item, int) for item in value):
        return list(value)
    return [value]


# --- errors ---------------------------------------------------------------------------------------------------


def _server_error() -> AzureError:
    return AzureError(500, "InternalServerError", "The server had an error while processing your request.")


def _retry_headers(wait: float) -> dict[str, str]:
    return {"retry-after": str(max(1, math.ceil(wait))), "retry-after-ms": str(max(1, math.ceil(wait * 1000)))}


def _quota_error(call: Call, throttle: Throttle) -> AzureError:
    headers = _retry_headers(throttle.wait)
    if throttle.token_wait is not None:
        headers["x-ratelimit-reset-tokens"] = str(max(1, math.ceil(throttle.token_wait)))
    if throttle.request_wait is not None:
        headers["x-ratelimit-reset-requests"] = str(max(1, math.ceil(throttle.request_wait)))
    kind = "token" if throttle.token_wait is not None else "call"
    message = (
        f"Requests to the {OPERATIONS[call.op]} Operation under Azure OpenAI API version {call.api_version} "
        f"have exceeded {kind} rate limit of your current OpenAI S0 pricing tier. Please retry after "
        f"{headers['retry-after']} seconds. Please go here: https://aka.ms/oai/quotaincrease if you would "
        "like to further increase the default rate limit."
    )
    return AzureError(429, "429", message, headers)


def _capacity_error(call: Call) -> AzureError:
    message = (
        f"Requests to the {OPERATIONS[call.op]} Operation under Azure OpenAI API version {call.api_version} "
        "are temporarily throttled: the service is experiencing high demand. Please retry after "
        f"{CAPACITY_RETRY_AFTER} seconds."
    )
    return AzureError(429, "429", message, _retry_headers(CAPACITY_RETRY_AFTER))


# --- response bodies ------------------------------------------------------------------------------------------


def _word(position: int) -> str:
    return WORDS[position % len(WORDS)]


def _text(tokens: int) -> str:
    return " ".join(_word(position) for position in range(tokens))


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
    if call.op == "embeddings":
        return _embeddings(call)
    text, reason = _text(call.completion_tokens), _finish_reason(call)
    if call.op == "chat":
        choices = [
            {"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": reason, "logprobs": None}
            for i in range(call.choices)
        ]
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": call.deployment,
            "choices": choices,
            "usage": _usage(call),
            "prompt_filter_results": [],
            "system_fingerprint": "fp_simulator",
        }
    choices = [{"index": i, "text": text, "finish_reason": reason, "logprobs": None} for i in range(call.choices)]
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": call.deployment,
        "choices": choices,
        "usage": _usage(call),
    }


def _response(call: Call) -> Json:
    output = {
        "type": "message",
        "id": f"msg_{uuid.uuid4().hex}",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": _text(call.completion_tokens), "annotations": []}],
    }
    return {
        "id": f"resp_{uuid.uuid4().hex}",
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "model": call.deployment,
        "previous_response_id": call.body.get("previous_response_id"),
        "output": [output],
        "usage": {
            "input_tokens": call.prompt_tokens,
            "output_tokens": call.completion_tokens,
            "total_tokens": call.prompt_tokens + call.completion_tokens,
        },
    }


def _embeddings(call: Call) -> Json:
    as_base64 = call.body.get("encoding_format") == "base64"
    data = []
    for index, item in enumerate(_inputs(call.body.get("input"))):
        vector = _embedding_vector(item)
        encoded: object = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode() if as_base64 else vector
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    return {"object": "list", "data": data, "model": call.deployment, "usage": _usage(call)}


def _embedding_vector(item: object) -> list[float]:
    """Deterministic unit-free vector per input, exactly representable as float32 (tests compare base64)."""
    digest = hashlib.sha256(json.dumps(item).encode()).digest()
    return [(byte - 128) / 128 for byte in digest[:EMBEDDING_DIMS]]


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
        text = _word(position) if position == 0 else f" {_word(position)}"
        return self._chunk(choice, text, None, first=position == 0)

    def finish(self, choice: int) -> Json:
        return self._chunk(choice, "", _finish_reason(self.call), first=False)

    def usage(self) -> Json:
        return {**self._base(), "choices": [], "usage": _usage(self.call)}

    def _chunk(self, choice: int, text: str, reason: str | None, first: bool) -> Json:
        entry: Json = {"index": choice, "finish_reason": reason, "logprobs": None}
        if self.call.op == "chat":
            delta: Json = {"role": "assistant", "content": text} if first else ({"content": text} if text else {})
            entry["delta"] = delta
        else:
            entry["text"] = text
        return self._usage_null({**self._base(), "choices": [entry]})

    def _base(self) -> Json:
        base: Json = {"id": self.id, "object": self.object, "created": self.created, "model": self.call.deployment}
        if self.call.op == "chat":
            base["system_fingerprint"] = "fp_simulator"
        return base

    def _usage_null(self, chunk: Json) -> Json:
        """OpenAI marks every chunk before the usage chunk with usage: null, only when usage was asked for."""
        return {**chunk, "usage": None} if self.call.include_usage else chunk


def _sse(chunk: Json) -> bytes:
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


def _typed_sse(kind: str, data: Json) -> bytes:
    """A Responses event: named in both the `event:` line and the payload's `type`, as OpenAI sends it."""
    payload = json.dumps({"type": kind, **data}, separators=(",", ":")).encode()
    return b"event: " + kind.encode() + b"\ndata: " + payload + b"\n\n"


# --- running several regions ----------------------------------------------------------------------------------


async def run_regions(
    specs: Sequence[tuple[str, Sequence[SimDeployment]]],
    clock: Clock,
    *,
    host: str = "127.0.0.1",
    ports: Sequence[int] | None = None,
    ttft: float = 0.3,
    per_token: float = 0.005,
    api_key: str | None = None,
) -> list[SimRegion]:
    """Start one listening SimRegion per spec; ports default to free ones."""
    if ports is not None and len(ports) != len(specs):
        raise ValueError(f"{len(specs)} regions but {len(ports)} ports")
    regions: list[SimRegion] = []
    try:
        for index, (name, deployments) in enumerate(specs):
            region = SimRegion(name, deployments, clock, ttft=ttft, per_token=per_token, api_key=api_key)
            await region.start(host, ports[index] if ports is not None else 0)
            regions.append(region)
    except BaseException:
        for region in regions:
            await region.stop()
        raise
    return regions


def control_app(regions: Sequence[SimRegion]) -> web.Application:
    """Fault and stats control on a port of its own, so it survives a region going down."""
    by_name = {region.name: region for region in regions}

    def region_of(request: web.Request) -> SimRegion:
        region = by_name.get(request.match_info["region"])
        if region is None:
            error = {"error": {"code": "NotFound", "message": f"Unknown region; known: {sorted(by_name)}"}}
            raise web.HTTPNotFound(text=json.dumps(error), content_type="application/json")
        return region

    async def post_faults(request: web.Request) -> web.Response:
        return await _faults_reply(region_of(request), request, spare=None)

    async def get_stats(request: web.Request) -> web.Response:
        return web.json_response(region_of(request).snapshot())

    async def post_reset(request: web.Request) -> web.Response:
        for region in regions:
            region.reset()
        return web.json_response({"regions": [region.snapshot() for region in regions]})

    app = web.Application()
    app.router.add_post("/_sim/reset", post_reset)
    app.router.add_post("/_sim/{region}/faults", post_faults)
    app.router.add_get("/_sim/{region}/stats", get_stats)
    return app


async def start_control(
    regions: Sequence[SimRegion], host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(control_app(regions), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner, f"http://{host}:{runner.addresses[0][1]}"


# --- command line ---------------------------------------------------------------------------------------------


def parse_region(text: str) -> tuple[str, list[SimDeployment]]:
    """'eastus:gpt-4o=10000,text-embedding-3-small=50000' -> ("eastus", [deployments])."""
    name, sep, rest = text.partition(":")
    if not sep or not name or not rest:
        raise argparse.ArgumentTypeError(f"expected REGION:DEPLOYMENT=TPM[,...], got {text!r}")
    deployments = []
    for item in rest.split(","):
        deployment, sep, tpm = item.partition("=")
        if not sep or not deployment or not tpm.isdigit() or int(tpm) < 1:
            raise argparse.ArgumentTypeError(f"expected DEPLOYMENT=TPM (positive integer), got {item!r}")
        deployments.append(SimDeployment(deployment, int(tpm)))
    return name, deployments


def parse_ports(text: str) -> list[int]:
    try:
        return [int(port) for port in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ports, got {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dev.simulator", description="Simulated Azure OpenAI regions.")
    parser.add_argument(
        "--region",
        type=parse_region,
        action="append",
        required=True,
        help="REGION:DEPLOYMENT=TPM[,DEPLOYMENT=TPM...]; repeat per region",
    )
    parser.add_argument("--time-scale", type=float, default=1.0, help="clock speed-up (default 1)")
    parser.add_argument("--host", default="127.0.0.1")
    ports = parser.add_mutually_exclusive_group()
    ports.add_argument("--port", type=int, default=0, help="first region port, the rest follow; 0 = free ports")
    ports.add_argument("--ports", type=parse_ports, help="one fixed port per region, comma separated")
    parser.add_argument("--control-port", type=int, default=0, help="control server port; 0 = a free port")
    parser.add_argument("--ttft", type=float, default=0.3, help="clock seconds to the first token")
    parser.add_argument("--per-token", type=float, default=0.005, help="clock seconds per output token")
    parser.add_argument("--api-key", default=None, help="the only accepted api-key (default: any non-empty)")
    return parser


async def serve(args: argparse.Namespace) -> None:
    specs: list[tuple[str, list[SimDeployment]]] = args.region
    ports = args.ports or ([args.port + i for i in range(len(specs))] if args.port else None)
    regions = await run_regions(
        specs,
        ScaledClock(args.time_scale),
        host=args.host,
        ports=ports,
        ttft=args.ttft,
        per_token=args.per_token,
        api_key=args.api_key,
    )
    control, control_url = await start_control(regions, args.host, args.control_port)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    print(json.dumps({"regions": {r.name: r.endpoint for r in regions}, "control": control_url}), flush=True)
    try:
        await stopping.wait()
    finally:
        await control.cleanup()
        for region in regions:
            await region.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.ports is not None and len(args.ports) != len(args.region):
        print(f"--ports lists {len(args.ports)} ports for {len(args.region)} regions", file=sys.stderr)
        return 2
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
