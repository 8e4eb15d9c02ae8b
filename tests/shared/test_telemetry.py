"""Telemetry through the SDK's in-memory exporters: the metrics and spans of a plain, a streamed and a retried
request, W3C trace context in and out, the gauges, and nothing at all when it is off."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from shared.cluster import Cluster
from shared.config import TelemetrySettings
from shared.record import RequestRecord
from shared.telemetry import Telemetry, from_settings
from tests.shared.rig import CHAT, EAST, HOSTS, WEST, FakeResponse, Rig, Sent, call, make_rig, wire_headers

PARENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{PARENT_TRACE}-b7ad6b7169203331-01"


class Exported:
    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.spans = InMemorySpanExporter()
        tracers = TracerProvider()
        tracers.add_span_processor(SimpleSpanProcessor(self.spans))
        self.telemetry = Telemetry(MeterProvider(metric_readers=[self.reader]), tracers)

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        assert data is not None
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]


async def request(
    rig: Rig, telemetry: Telemetry, payload: dict[str, Any], traceparent: str | None = None
) -> RequestRecord:
    """What web.serve does around Proxy.handle: start the request's span, finish it once answered."""
    path = f"/openai/deployments/{CHAT}/chat/completions"
    record = RequestRecord("POST", path)
    pairs = [("api-key", "gw-client-key-0123456789"), ("content-type", "application/json")]
    if traceparent:
        pairs.append(("traceparent", traceparent))
    telemetry.start(record, wire_headers(pairs))
    outgoing = await call(rig, path, pairs, json.dumps(payload).encode(), record=record)
    if outgoing.stream is not None:
        async for _ in outgoing.stream:
            pass
    record.status = outgoing.status
    telemetry.finish(record)
    return record


def completion(sent: Sent) -> FakeResponse:
    body = {"model": "gpt-4o-2024-11-20", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}}
    return FakeResponse(200, {}, json.dumps(body).encode())


async def test_a_plain_request_its_metrics_and_its_spans_with_trace_context_in_and_out() -> None:
    exported = Exported()
    rig = make_rig(completion, hosts=(EAST,), telemetry=exported.telemetry)
    await request(rig, exported.telemetry, {"messages": [], "max_tokens": 4}, TRACEPARENT)
    tokens = {p.attributes["gen_ai.token.type"]: p for p in exported.points("gen_ai.client.token.usage")}
    assert (tokens["input"].sum, tokens["output"].sum) == (9, 4)
    attributes = dict(tokens["input"].attributes)
    assert attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "azure.ai.openai",
        "gen_ai.request.model": CHAT,
        "gen_ai.response.model": "gpt-4o-2024-11-20",  # what answered: the deployment's model version
        "gen_ai.token.type": "input",
        "gateway.client": "app",
        "gateway.host": "eastus",
        "server.address": "east.example.openai.azure.com",
    }
    [duration] = exported.points("gen_ai.client.operation.duration")
    assert duration.count == 1 and duration.attributes["http.response.status_code"] == 200
    assert exported.points("gen_ai.client.operation.time_to_first_chunk") == []  # not a stream
    [counted] = exported.points("gateway.requests")
    assert counted.value == 1 and counted.attributes["gateway.host"] == "eastus"
    attempt, server = exported.spans.get_finished_spans()
    assert server.kind is SpanKind.SERVER and attempt.kind is SpanKind.CLIENT
    assert f"{server.context.trace_id:032x}" == PARENT_TRACE  # the client's trace continues through the gateway
    assert attempt.parent is not None and attempt.parent.span_id == server.context.span_id
    assert attempt.name == f"chat {CHAT}" and attempt.attributes["gateway.outcome"] == "ok"
    upstream = rig.session.sent[0].headers["traceparent"]
    assert upstream.split("-")[1] == PARENT_TRACE and upstream.split("-")[2] == f"{attempt.context.span_id:016x}"


def stream(sent: Sent) -> FakeResponse:
    events = [
        b'data: {"choices":[{"delta":{"content":"hi"},"index":0}],"usage":null}\n\n',
        b'data: {"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1}}\n\n',
        b"data: [DONE]\n\n",
    ]
    return FakeResponse(200, {"content-type": "text/event-stream"}, content_type="text/event-stream", chunks=events)


async def test_a_streamed_request_records_its_time_to_first_chunk_and_exact_usage() -> None:
    exported = Exported()
    rig = make_rig(stream, hosts=(EAST,), telemetry=exported.telemetry)
    record = await request(rig, exported.telemetry, {"messages": [], "max_tokens": 4, "stream": True})
    [first] = exported.points("gen_ai.client.operation.time_to_first_chunk")
    assert first.count == 1 and first.sum == pytest.approx(record.ttfb_ms / 1000)  # type: ignore[operator]
    tokens = {p.attributes["gen_ai.token.type"]: p.sum for p in exported.points("gen_ai.client.token.usage")}
    assert tokens == {"input": 5, "output": 1}
    assert {p.attributes["gen_ai.response.model"] for p in exported.points("gen_ai.client.token.usage")} == {
        "gpt-4o-mini"
    }
    [attempt] = [s for s in exported.spans.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert attempt.attributes is not None and attempt.attributes["gateway.outcome"] == "ok"


def quota_429_on_east(sent: Sent) -> FakeResponse:
    if sent.host == EAST:
        return FakeResponse(429, {"retry-after": "3", "x-ratelimit-reset-tokens": "3"}, b'{"error": {"code": "429"}}')
    return completion(sent)


async def test_a_retried_request_counts_the_429_the_cooldown_and_the_retry_and_spans_both_attempts() -> None:
    exported = Exported()
    rig = make_rig(quota_429_on_east, hosts=(EAST, WEST), telemetry=exported.telemetry)
    await request(rig, exported.telemetry, {"messages": [], "max_tokens": 4})
    [limited] = exported.points("gateway.upstream.rate_limited")
    assert (
        dict(limited.attributes) == {"gateway.host": "eastus", "gateway.rate_limit.kind": "tokens"}
        and limited.value == 1
    )
    [retry] = exported.points("gateway.retries")
    assert dict(retry.attributes) == {"gateway.host": "eastus", "gateway.reason": "token_limit"}
    assert exported.points("gateway.cooldowns")[0].attributes["gateway.host"] == "eastus"
    attempts = [s for s in exported.spans.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert [(s.attributes["gateway.host"], s.attributes["gateway.outcome"]) for s in attempts] == [
        ("eastus", "token_limit"),
        ("westus", "ok"),
    ]
    assert attempts[0].status.status_code is StatusCode.ERROR


async def test_the_gauges_report_window_use_quota_available_hosts_and_panic() -> None:
    exported = Exported()
    rig = make_rig(completion, telemetry=exported.telemetry)
    exported.telemetry.watch(Cluster({CHAT: HOSTS}), rig.ledger, rig.health)
    rig.ledger.reserve((EAST.key,), 25_000, prompt=0, client="x", deployment=CHAT)
    utilization = {
        (p.attributes["gateway.host"], p.attributes["gateway.window"]): p.value
        for p in exported.points("gateway.host.window.utilization")
    }
    assert utilization[("eastus", "tokens")] == pytest.approx(0.25) and utilization[("westus", "tokens")] == 0
    assert {p.attributes["gateway.host"]: p.value for p in exported.points("gateway.host.quota.tokens")}[
        "eastus"
    ] == 100_000
    assert [p.value for p in exported.points("gateway.hosts.available")] == [3]
    rig.health.note_panic(CHAT, True)
    assert [p.value for p in exported.points("gateway.panic")] == [1]


async def test_off_means_nothing_is_created_or_recorded() -> None:
    off, flush = from_settings(TelemetrySettings(), credential=lambda: None)
    assert not off.on
    rig = make_rig(completion, hosts=(EAST,), telemetry=off)
    record = await request(rig, off, {"messages": [], "max_tokens": 4}, TRACEPARENT)
    assert record.trace is None and "traceparent" not in rig.session.sent[0].headers
    flush()


async def test_otlp_exports_traces_and_metrics_to_the_endpoint_over_http() -> None:
    received: dict[str, int] = {}

    async def collect(request: web.Request) -> web.Response:
        body = await request.read()
        received[request.path] = received.get(request.path, 0) + len(body)
        assert request.headers["content-type"] == "application/x-protobuf"
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/v1/traces", collect)
    app.router.add_post("/v1/metrics", collect)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    endpoint = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        telemetry, flush = from_settings(TelemetrySettings(otlp_endpoint=endpoint), credential=lambda: None)
        assert telemetry.on
        rig = make_rig(completion, hosts=(EAST,), telemetry=telemetry)
        await request(rig, telemetry, {"messages": [], "max_tokens": 4})
        await asyncio.to_thread(flush)  # the exporters are synchronous: they post from a thread
    finally:
        await runner.cleanup()
    assert received.get("/v1/traces", 0) > 0 and received.get("/v1/metrics", 0) > 0
