"""Telemetry: OpenTelemetry metrics and traces, with the GenAI semantic conventions and the gateway's own.

Exported to Application Insights (azure-monitor-opentelemetry) when APPLICATIONINSIGHTS_CONNECTION_STRING is
set, to an OTLP endpoint when OTEL_EXPORTER_OTLP_ENDPOINT is set, nowhere otherwise: then every method
returns at its first line, so the request path pays nothing measurable.

One span per request (its parent taken from the client's W3C `traceparent`) and a child span per attempt,
whose context goes upstream in `traceparent`. Metrics: `gen_ai.client.token.usage` (by
`gen_ai.token.type`), `gen_ai.client.operation.duration`, `gen_ai.client.operation.time_to_first_chunk`
(streams), and `gateway.*` counters and gauges (names and attributes are what the Bicep workbook and alerts
query: keep them).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import context, propagate, trace
from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, TracerProvider

from shared.cluster import Cluster, Host
from shared.config import TelemetrySettings
from shared.health import HealthBoard
from shared.ledger import Ledger
from shared.record import RequestRecord

log = logging.getLogger("gateway")

PROVIDER = "azure.ai.openai"
SCHEMA = "https://opentelemetry.io/schemas/1.37.0"
# Operation names of the GenAI conventions, by the gateway's operation.
_OPERATIONS = {
    "chat/completions": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
    "responses": "chat",
    "images/generations": "image_generation",
    "images/edits": "image_generation",
}
_TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864]
_DURATION_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]


@functools.lru_cache(maxsize=64)  # the configured hosts' endpoints
def _server_address(endpoint: str) -> str:
    return urlsplit(endpoint).hostname or ""


class Telemetry:
    """Instruments over a MeterProvider and TracerProvider, or nothing at all (`Telemetry()`)."""

    def __init__(self, meters: MeterProvider | None = None, tracers: TracerProvider | None = None) -> None:
        self.on = meters is not None and tracers is not None
        if meters is None or tracers is None:
            return
        self._tracer: Tracer = tracers.get_tracer("gateway", schema_url=SCHEMA)
        meter: Meter = meters.get_meter("gateway", schema_url=SCHEMA)
        self._meter = meter
        self._tokens = meter.create_histogram(
            "gen_ai.client.token.usage", unit="{token}", explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS
        )
        self._duration = meter.create_histogram(
            "gen_ai.client.operation.duration", unit="s", explicit_bucket_boundaries_advisory=_DURATION_BUCKETS
        )
        self._first_chunk = meter.create_histogram(
            "gen_ai.client.operation.time_to_first_chunk",
            unit="s",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self._requests = meter.create_counter("gateway.requests", unit="{request}")
        self._rate_limited = meter.create_counter("gateway.upstream.rate_limited", unit="{response}")
        self._retries = meter.create_counter("gateway.retries", unit="{attempt}")
        self._cooldowns = meter.create_counter("gateway.cooldowns", unit="{cooldown}")
        self._ejections = meter.create_counter("gateway.ejections", unit="{ejection}")
        self._rejections = meter.create_counter("gateway.client.rejections", unit="{request}")

    # -- one request and its attempts ------------------------------------------------------------------
    def start(self, record: RequestRecord, headers: Mapping[str, str]) -> None:
        """The request's span, a child of the caller's trace when it sent a `traceparent`."""
        if not self.on:
            return
        parent = propagate.extract(headers) if "traceparent" in headers else None
        record.trace = self._tracer.start_span(f"gateway {record.method}", context=parent, kind=SpanKind.SERVER)

    def attempt(self, record: RequestRecord, host: Host, headers: dict[str, str]) -> Span | None:
        """A child span for one try on one host; its trace context goes upstream in `headers`."""
        if not self.on or not isinstance(record.trace, Span):
            return None
        name = f"{_OPERATIONS.get(record.operation, record.operation)} {record.deployment}".strip()
        span = self._tracer.start_span(
            name,
            context=trace.set_span_in_context(record.trace),
            kind=SpanKind.CLIENT,
            attributes={**self._genai(record, host), "gateway.host": host.name},
        )
        propagate.inject(headers, context=trace.set_span_in_context(span, context.Context()))
        return span

    def attempted(self, span: Span | None, outcome: str, status: int | None) -> None:
        if span is None:
            return
        span.set_attribute("gateway.outcome", outcome)
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        if outcome != "ok":
            span.set_status(Status(StatusCode.ERROR, outcome))
        span.end()

    def finish(self, record: RequestRecord) -> None:
        """The request is over (answered, or its client left): its metrics and the end of its span."""
        if not self.on:
            return
        base = self._genai(record, None)
        seconds = record.elapsed_ms() / 1000.0
        failed = {"error.type": record.error or str(record.status)} if record.status >= 400 else {}
        if record.input_tokens is not None:
            self._tokens.record(record.input_tokens, {**base, "gen_ai.token.type": "input"})
        if record.output_tokens is not None:
            self._tokens.record(record.output_tokens, {**base, "gen_ai.token.type": "output"})
        self._duration.record(seconds, {**base, "http.response.status_code": record.status, **failed})
        if record.stream and record.ttfb_ms is not None:
            self._first_chunk.record(record.ttfb_ms / 1000.0, base)
        self._requests.add(
            1,
            {
                "gateway.client": record.client,
                "gen_ai.request.model": record.deployment,
                "gateway.host": record.host,
                "http.response.status_code": record.status,
            },
        )
        span = record.trace
        if isinstance(span, Span):
            span.set_attributes(
                {**base, "http.response.status_code": record.status, "gateway.request_id": record.request_id}
            )
            if record.status >= 500:
                span.set_status(Status(StatusCode.ERROR, record.error or str(record.status)))
            span.end()

    def _genai(self, record: RequestRecord, host: Host | None) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": _OPERATIONS.get(record.operation, record.operation),
            "gen_ai.provider.name": PROVIDER,
            "gen_ai.request.model": record.deployment,
            "gateway.client": record.client,
            "gateway.host": host.name if host is not None else record.host,
        }
        endpoint = host.endpoint if host is not None else record.host_endpoint
        if endpoint:
            attributes["server.address"] = _server_address(endpoint)
        if record.response_model:
            attributes["gen_ai.response.model"] = record.response_model
        return attributes

    # -- what the gateway decided -------------------------------------------------------------------------
    def rate_limited(self, host: str, kind: str) -> None:
        if self.on:
            self._rate_limited.add(1, {"gateway.host": host, "gateway.rate_limit.kind": kind})

    def retried(self, host: str, reason: str) -> None:
        """Another host is tried after `host` failed this way."""
        if self.on:
            self._retries.add(1, {"gateway.host": host, "gateway.reason": reason})

    def cooled(self, host: str, reason: str) -> None:
        if self.on:
            self._cooldowns.add(1, {"gateway.host": host, "gateway.reason": reason})

    def ejected(self, host: str, reason: str) -> None:
        if self.on:
            self._ejections.add(1, {"gateway.host": host, "gateway.reason": reason})

    def rejected(self, client: str, reason: str) -> None:
        if self.on:
            self._rejections.add(1, {"gateway.client": client, "gateway.reason": reason})

    def watch(self, cluster: Cluster, ledger: Ledger, health: HealthBoard) -> None:
        """Gauges read when exported: window use and quota per host, hosts able to serve and panic per deployment."""
        if not self.on:
            return
        hosts = cluster.all_hosts()

        def windows(_: CallbackOptions) -> Iterable[Observation]:
            for host in hosts:
                free_tokens, free_requests = ledger.headroom(host.key, host.tpm, host.rpm)
                limit = max(1.0, host.rpm / 6.0)
                yield Observation(1 - free_tokens / host.tpm, {"gateway.host": host.name, "gateway.window": "tokens"})
                yield Observation(1 - free_requests / limit, {"gateway.host": host.name, "gateway.window": "requests"})

        def quotas(_: CallbackOptions) -> Iterable[Observation]:
            return [Observation(host.tpm, {"gateway.host": host.name}) for host in hosts]

        def available(_: CallbackOptions) -> Iterable[Observation]:
            for logical, members in cluster.deployments.items():
                count = sum(health.available(h.key) or health.probe_disagrees(h.key) for h in members)
                yield Observation(count, {"gen_ai.request.model": logical})

        def panic(_: CallbackOptions) -> Iterable[Observation]:
            now = health.panic()
            return [
                Observation(int(logical in now), {"gen_ai.request.model": logical}) for logical in cluster.deployments
            ]

        self._meter.create_observable_gauge("gateway.host.window.utilization", [windows], unit="1")
        self._meter.create_observable_gauge("gateway.host.quota.tokens", [quotas], unit="{token}")
        self._meter.create_observable_gauge("gateway.hosts.available", [available], unit="{host}")
        self._meter.create_observable_gauge("gateway.panic", [panic], unit="1")


def from_settings(settings: TelemetrySettings, credential: Callable[[], Any]) -> tuple[Telemetry, Callable[[], None]]:
    """The exporters the settings name, and how to flush them at shutdown; `Telemetry()` when none is set."""
    if not settings.enabled:
        return Telemetry(), lambda: None
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": "aoai-gateway"})
    readers: list[Any] = []
    processors: list[Any] = []
    if settings.otlp_endpoint is not None:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        readers.append(
            PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=f"{settings.otlp_endpoint}/v1/metrics"))
        )
        processors.append(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{settings.otlp_endpoint}/v1/traces")))
    if settings.azure_monitor is not None:
        from azure.monitor.opentelemetry.exporter import AzureMonitorMetricExporter, AzureMonitorTraceExporter

        options: dict[str, Any] = {"connection_string": settings.azure_monitor.reveal()}
        if settings.entra_ingestion:
            options["credential"] = credential()  # the resource accepts Entra ID tokens only
        readers.append(PeriodicExportingMetricReader(AzureMonitorMetricExporter(**options)))
        processors.append(BatchSpanProcessor(AzureMonitorTraceExporter(**options)))
    meters = SdkMeterProvider(metric_readers=readers, resource=resource)
    tracers = SdkTracerProvider(resource=resource)
    for processor in processors:
        tracers.add_span_processor(processor)
    log.info(
        "telemetry: exporting to %s",
        ", ".join(
            n for n, on in (("Application Insights", settings.azure_monitor), ("OTLP", settings.otlp_endpoint)) if on
        ),
    )

    def shutdown() -> None:
        meters.shutdown()
        tracers.shutdown()

    return Telemetry(meters, tracers), shutdown
