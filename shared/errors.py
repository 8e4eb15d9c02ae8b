"""OpenAI-shaped errors: the only way a failure leaves the gateway."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

# OpenAI's error `type` for each status the gateway produces itself.
_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    431: "invalid_request_error",
    500: "server_error",
    502: "server_error",
    503: "server_error",
    504: "server_error",
}


class GatewayError(Exception):
    """An error answered to the client; `message` must be safe to show (no secrets, no traces)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.extra_headers = dict(headers or {})

    def body(self) -> bytes:
        error = {"code": self.code, "message": self.message, "type": _TYPES.get(self.status, "api_error")}
        return json.dumps({"error": error}).encode()

    def headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", **self.extra_headers}
        if self.retry_after is not None:
            headers.update(retry_after_headers(self.retry_after))
        return headers


def retry_after_headers(seconds: float) -> dict[str, str]:
    """Both forms the SDKs honour: whole seconds (rounded up) and milliseconds."""
    seconds = max(0.0, seconds)
    return {"retry-after": str(max(1, math.ceil(seconds))), "retry-after-ms": str(max(1, math.ceil(seconds * 1000)))}


def sse_error_event(code: str, message: str) -> bytes:
    """An SSE event the openai SDK raises on, for failures after a stream has started."""
    payload = {"error": {"code": code, "message": message, "type": "server_error"}}
    return b"data: " + json.dumps(payload).encode() + b"\n\n"
