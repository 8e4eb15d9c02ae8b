"""What the gateway knows about a request before it routes it: the route, the parsed body, and its cost.

JSON bodies are parsed for routing and cost (bounded in depth: deep nesting is the client's error,
never a crash); multipart and binary bodies pass as they are.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared import routes, usage
from shared.config import Routing
from shared.errors import GatewayError


@dataclass(frozen=True)
class Inbound:
    route: routes.Route
    query: list[tuple[str, str]]
    headers: Mapping[str, str]
    raw: bytes
    body: dict[str, Any] | None
    logical: str | None  # the logical deployment: from the path, or the v1 body's `model`
    prompt: int  # estimated prompt tokens
    cost: int  # tokens Azure will charge at admission: prompt + completion budget (0 when not metered)
    stream: bool
    inject_usage: bool  # ask upstream for the usage chunk the client did not ask for (and strip it again)

    @property
    def metered(self) -> bool:
        """Counted against a deployment's token and request limits (inference); files, lists, reads are not."""
        return self.route.metered


def parse(
    route: routes.Route,
    query: list[tuple[str, str]],
    headers: Mapping[str, str],
    raw: bytes,
    routing: Routing,
) -> Inbound:
    body = parse_body(raw, headers.get("content-type", ""), routing.max_json_depth)
    logical = route.deployment or (_model(body) if route.by_model else None)
    prompt, completion = (
        usage.estimate(route.operation, body, routing.max_tokens_default(logical or "")) if route.metered else (0, 0)
    )
    stream = bool(body and body.get("stream") is True)
    inject = bool(
        body
        and stream
        and route.operation in ("chat/completions", "completions")
        and not usage.wants_stream_usage(body)
        and usage.supports_stream_usage(dict(query).get("api-version"))
    )
    return Inbound(route, query, headers, raw, body, logical, prompt, prompt + completion, stream, inject)


def parse_body(raw: bytes, content_type: str, max_depth: int) -> dict[str, Any] | None:
    if not raw:  # a GET or DELETE, which the SDK still labels as JSON
        return None
    # A JSON object is read whatever its label: routing, cost and the objects it names must not depend on a
    # content type the upstream may not check. Multipart (uploads) and other bodies pass untouched.
    if "json" not in content_type and (content_type.startswith("multipart/") or raw.lstrip()[:1] != b"{"):
        return None
    # Brackets bound the nesting from above: only a body that could be deep is measured exactly.
    if raw.count(b"[") + raw.count(b"{") > max_depth and _depth_exceeds(raw, max_depth):
        raise GatewayError(400, "invalid_json", f"The request body nests deeper than {max_depth} levels.")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise GatewayError(400, "invalid_json", "The request body is not valid JSON.") from None
    if not isinstance(doc, dict):
        raise GatewayError(400, "invalid_body", "The request body must be a JSON object.")
    return doc


# A string, or an unclosed one to the end of the text: possessive, so no input makes it backtrack.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*+(?:"|\Z)')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _depth_exceeds(raw: bytes, limit: int) -> bool:
    """Nesting depth of JSON text past `limit`? Brackets inside strings do not count (both scans run in C)."""
    depth = 0
    for bracket in _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS):
        depth += 1 if bracket in b"[{" else -1
        if depth > limit:
            return True
    return False


def _model(body: dict[str, Any] | None) -> str:
    model = body.get("model") if body else None
    if not isinstance(model, str) or not routes.valid_deployment_name(model):
        raise GatewayError(400, "missing_model", "The v1 surface needs a JSON body whose 'model' names a deployment.")
    return model
