"""OpenAI-shaped errors, Retry-After headers and the SSE error event."""

from __future__ import annotations

import json

import pytest

from shared.errors import GatewayError, retry_after_headers, sse_error_event


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "invalid_request_error"),
        (404, "invalid_request_error"),
        (429, "rate_limit_error"),
        (502, "server_error"),
        (503, "server_error"),
        (504, "server_error"),
        (418, "api_error"),
    ],
)
def test_body_is_openai_shaped(status: int, kind: str) -> None:
    error = GatewayError(status, "SomeCode", "Something went wrong.")
    assert json.loads(error.body()) == {"error": {"code": "SomeCode", "message": "Something went wrong.", "type": kind}}
    assert error.headers() == {"content-type": "application/json"}


def test_headers_carry_retry_after_and_extras() -> None:
    error = GatewayError(429, "429", "busy", retry_after=1.2, headers={"x-gateway-backend": "eastus"})
    assert error.headers() == {
        "content-type": "application/json",
        "x-gateway-backend": "eastus",
        "retry-after": "2",
        "retry-after-ms": "1200",
    }


@pytest.mark.parametrize(
    ("seconds", "whole", "ms"),
    [
        (2.0, "2", "2000"),
        (2.0001, "3", "2001"),  # rounded up: never ask for less than the real wait
        (0.25, "1", "250"),
        (0.0004, "1", "1"),
        (0.0, "1", "1"),  # at least one: "retry now" invites a hot loop
        (-5.0, "1", "1"),
        (59.5, "60", "59500"),
    ],
)
def test_retry_after_headers(seconds: float, whole: str, ms: str) -> None:
    assert retry_after_headers(seconds) == {"retry-after": whole, "retry-after-ms": ms}


def test_sse_error_event_is_one_json_data_event() -> None:
    event = sse_error_event("upstream_cut", 'The "upstream"\nstopped.')
    assert event.startswith(b"data: ")
    assert event.endswith(b"\n\n")
    assert event.count(b"\n") == 2  # the newline in the message is escaped, not an SSE line break
    payload = json.loads(event[len(b"data: ") :])
    assert payload == {"error": {"code": "upstream_cut", "message": 'The "upstream"\nstopped.', "type": "server_error"}}
