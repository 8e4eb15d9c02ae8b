"""Azure-shaped error answers: `{"error": {"code", "message"}}` with the status and headers Azure sends.

Handlers raise an `AzureError`; the region's pipeline turns it into the answer. Errors about stateful objects
also carry OpenAI's `type` ("invalid_request_error"), as the v1 surface and the SDK expect.
"""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web

from dev.sim.limiter import Throttle

CAPACITY_RETRY_AFTER = 10  # clock seconds a "high demand" 429 asks for
INVALID_REQUEST = "invalid_request_error"


class AzureError(Exception):
    """An error answer: status, code, message, optional OpenAI `type` and extra headers."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None, *, kind: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.kind = kind

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.kind is not None:
            error |= {"type": self.kind, "param": None}
        return {"error": error}

    def response(self) -> web.Response:
        return web.json_response(self.body(), status=self.status, headers=self.headers)


def bad_request(message: str, code: str = "BadRequest") -> AzureError:
    return AzureError(400, code, message, kind=INVALID_REQUEST)


def not_found(noun: str, object_id: str) -> AzureError:
    """What a region answers for an object it does not hold: other regions' objects included."""
    return AzureError(404, "not_found", f"No {noun} found with id {object_id!r}.", kind=INVALID_REQUEST)


def route_not_found() -> AzureError:
    return AzureError(404, "404", "Resource not found")


def server_error() -> AzureError:
    return AzureError(500, "InternalServerError", "The server had an error while processing your request.")


def unauthorized() -> AzureError:
    return AzureError(
        401,
        "401",
        "Access denied due to invalid subscription key or wrong API endpoint. "
        "Make sure to provide a valid key for an active subscription and use a correct "
        "regional API endpoint for your resource.",
    )


def missing_api_version() -> AzureError:
    return AzureError(
        400,
        "MissingApiVersionParameter",
        "The api-version query parameter (?api-version=) is required for all requests.",
    )


def deployment_not_found() -> AzureError:
    return AzureError(
        404,
        "DeploymentNotFound",
        "The API deployment for this resource does not exist. "
        "If you created the deployment within the last 5 minutes, please wait a moment and try again.",
    )


def retry_headers(wait: float) -> dict[str, str]:
    return {"retry-after": str(max(1, math.ceil(wait))), "retry-after-ms": str(max(1, math.ceil(wait * 1000)))}


def quota_error(operation: str, api_version: str, throttle: Throttle) -> AzureError:
    """A quota 429: which limit tripped is in x-ratelimit-reset-tokens / -requests."""
    headers = retry_headers(throttle.wait)
    if throttle.token_wait is not None:
        headers["x-ratelimit-reset-tokens"] = str(max(1, math.ceil(throttle.token_wait)))
    if throttle.request_wait is not None:
        headers["x-ratelimit-reset-requests"] = str(max(1, math.ceil(throttle.request_wait)))
    limit = "token" if throttle.token_wait is not None else "call"
    message = (
        f"Requests to the {operation} Operation under Azure OpenAI API version {api_version} "
        f"have exceeded {limit} rate limit of your current OpenAI S0 pricing tier. Please retry after "
        f"{headers['retry-after']} seconds. Please go here: https://aka.ms/oai/quotaincrease if you would "
        "like to further increase the default rate limit."
    )
    return AzureError(429, "429", message, headers)


def capacity_error(operation: str, api_version: str) -> AzureError:
    """A capacity 429: the region is busy, not this deployment's quota."""
    message = (
        f"Requests to the {operation} Operation under Azure OpenAI API version {api_version} "
        "are temporarily throttled: the service is experiencing high demand. Please retry after "
        f"{CAPACITY_RETRY_AFTER} seconds."
    )
    return AzureError(429, "429", message, retry_headers(CAPACITY_RETRY_AFTER))
