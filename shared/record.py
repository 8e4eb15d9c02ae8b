"""What happened to one request, gathered on its way through the gateway: the access log line's content.

Durations are real milliseconds (perf_counter), not clock seconds: they describe this process's work.
Nothing secret goes in: no key, token, prompt or completion text.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Attempt:
    host: str
    outcome: str  # "ok", a verdict ("token_limit", "failed", ...) or a breakage ("unreachable", ...)
    ms: float
    status: int | None = None


@dataclass(slots=True)  # one per request in flight, an open stream's included: no __dict__ each
class RequestRecord:
    method: str
    path: str
    request_id: str = ""  # the upstream's x-request-id when it gave one, else a new one (ensure_id)
    client: str = ""
    deployment: str = ""
    operation: str = ""
    host: str = ""
    status: int = 0
    stream: bool = False
    attempts: list[Attempt] = field(default_factory=list)
    input_tokens: int | None = None
    output_tokens: int | None = None
    ttfb_ms: float | None = None
    ending: str = ""  # for streams: complete | cut_off | abandoned; "client_gone" when the client left first
    error: str = ""  # the gateway's error code, when it answered with one
    upstream_request_id: str = ""
    host_endpoint: str = ""  # of the host that answered
    response_model: str = ""  # the model the answer names (its version), for telemetry
    trace: Any = None  # the request's span, when telemetry is on
    timer: Callable[[], float] = time.perf_counter
    started: float = 0.0

    def __post_init__(self) -> None:
        self.started = self.timer()

    def ensure_id(self) -> str:
        """The request's id, made when first needed: most answers bring the upstream's (os.urandom is a syscall)."""
        if not self.request_id:
            self.request_id = uuid.uuid4().hex
        return self.request_id

    def elapsed_ms(self) -> float:
        return (self.timer() - self.started) * 1000.0

    def attempt(self, host: str, outcome: str, began: float, status: int | None = None) -> None:
        self.attempts.append(Attempt(host, outcome, (self.timer() - began) * 1000.0, status))

    def first_byte(self) -> None:
        if self.ttfb_ms is None:
            self.ttfb_ms = self.elapsed_ms()

    def fields(self) -> dict[str, Any]:
        """The access log line (scripts outside the project read these keys)."""
        return {
            "request_id": self.ensure_id(),
            "client": self.client,
            "deployment": self.deployment,
            "operation": self.operation,
            "method": self.method,
            "path": self.path,
            "host": self.host,
            "status": self.status,
            "attempts": [
                {"host": a.host, "outcome": a.outcome, "ms": round(a.ms, 2)}
                | ({"status": a.status} if a.status is not None else {})
                for a in self.attempts
            ],
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "duration_ms": round(self.elapsed_ms(), 2),
            "ttfb_ms": None if self.ttfb_ms is None else round(self.ttfb_ms, 2),
            "stream": self.stream,
            "ending": self.ending,
            "error": self.error,
            "upstream_request_id": self.upstream_request_id,
        }
