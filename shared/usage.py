"""Token arithmetic: what a request may cost before it runs, and what it really used after.

The estimate follows Azure's own admission rule: prompt size counted from characters (about four
per token, plus a few per chat message) plus the completion budget times the number of choices.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from shared.ledger import TokenUsage

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
# stream_options (and so include_usage) exists from this Azure api-version on.
STREAM_USAGE_MIN_API_VERSION = "2024-09-01"


def estimate(operation: str, body: Mapping[str, Any] | None, default_max_tokens: int) -> tuple[int, int]:
    """(prompt, completion budget) Azure will charge at admission; (0, 0) for operations without a token quota."""
    if body is None:
        return 0, 0
    if operation == "embeddings":
        return _count_input(body.get("input")), 0
    if operation == "chat/completions":
        prompt = _count_messages(body.get("messages")) + _chars_tokens(_json_len(body.get("tools")))
    elif operation == "completions":
        prompt = _count_input(body.get("prompt"))
    elif operation == "responses":
        prompt = _count_input(body.get("input")) + _chars_tokens(_text_len(body.get("instructions")))
    else:
        return 0, 0
    completion = _first_int(body, ("max_completion_tokens", "max_tokens", "max_output_tokens"))
    choices = max(_first_int(body, ("n",)) or 1, _first_int(body, ("best_of",)) or 1)
    return prompt, (completion or default_max_tokens) * choices


def _first_int(body: Mapping[str, Any], names: tuple[str, ...]) -> int | None:
    for name in names:
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _chars_tokens(chars: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN)


def _count_messages(messages: Any) -> int:
    if not isinstance(messages, list):
        return 0
    chars = sum(_text_len(m.get("content")) for m in messages if isinstance(m, dict))
    return _chars_tokens(chars) + TOKENS_PER_MESSAGE * len(messages)


def _count_input(value: Any) -> int:
    """Strings count by characters, token arrays by length; lists of either add up."""
    if isinstance(value, str):
        return _chars_tokens(len(value))
    if isinstance(value, list):
        if value and all(isinstance(v, int) for v in value):
            return len(value)
        return sum(_count_input(v) if not isinstance(v, dict) else _count_messages([v]) for v in value)
    return 0


def _text_len(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(
            len(part["text"]) for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return 0


def _json_len(value: Any) -> int:
    return len(json.dumps(value)) if value else 0


def usage_tokens(usage: Any) -> TokenUsage | None:
    """Prompt and completion tokens from any `usage` object: chat/completions/embeddings, Responses, audio, images."""
    if not isinstance(usage, dict):
        return None
    prompt = _int(usage.get("prompt_tokens"), usage.get("input_tokens"))
    completion = _int(usage.get("completion_tokens"), usage.get("output_tokens"))
    if prompt is None and completion is None:
        total = _int(usage.get("total_tokens"))
        return None if total is None else TokenUsage(total, 0)
    return TokenUsage(prompt or 0, completion or 0)


def _int(*values: Any) -> int | None:
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def json_or_none(content: bytes) -> Any:
    """The JSON in `content`, or None when it is not JSON (or nests too deep to parse)."""
    try:
        return json.loads(content)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def usage_of(doc: Any) -> TokenUsage | None:
    """The usage in a parsed JSON answer (or a Responses event wrapping the response), if any."""
    if not isinstance(doc, dict):
        return None
    if "usage" in doc:
        return usage_tokens(doc["usage"])
    response = doc.get("response")  # Responses API events wrap the response object
    return usage_tokens(response.get("usage")) if isinstance(response, dict) else None


def model_of(doc: Any) -> str:
    """The model a parsed answer (or a Responses event wrapping the response) names; "" when none."""
    if isinstance(doc, dict) and isinstance(doc.get("response"), dict):
        doc = doc["response"]
    model = doc.get("model") if isinstance(doc, dict) else None
    return model if isinstance(model, str) else ""


def supports_stream_usage(api_version: str | None) -> bool:
    """The v1 surface has no api-version; dated versions need 2024-09-01(-preview) or later."""
    if not api_version or api_version in ("preview", "latest", "v1"):
        return True
    return api_version[:10] >= STREAM_USAGE_MIN_API_VERSION


_STREAM_USAGE_MEMBER = b'"stream_options":{"include_usage":true}'


def with_stream_usage(raw: bytes, body: Mapping[str, Any]) -> bytes | None:
    """`raw` (the JSON text of `body`) asking for the usage chunk, spliced in as the object's first member rather
    than re-serialized (a long prompt costs milliseconds to dump); None when only rewriting it would do: the
    body has stream_options already (merged, not duplicated), or is not UTF-8 text."""
    if "stream_options" in body or not body or json.detect_encoding(raw) != "utf-8":
        return None
    start = len(raw) - len(raw.lstrip(b" \t\r\n"))
    if raw[start : start + 1] != b"{":
        return None  # a byte-order mark, say
    return raw[: start + 1] + _STREAM_USAGE_MEMBER + b"," + raw[start + 1 :]


def wants_stream_usage(body: Mapping[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


_USAGE_NULL = b',"usage":null'
_USAGE_KEY = b'"usage"'
_NULL_USAGE = b'"usage":null'
# Streams that do not end with `data: [DONE]` end with one of these events (named in `event:` or in the
# payload's `type`): Responses, audio transcription and speech, image generation and edits; and an in-band error.
TERMINAL_EVENTS = frozenset(
    {
        "response.completed",
        "response.failed",
        "response.incomplete",
        "transcript.text.done",
        "speech.audio.done",
        "image_generation.completed",
        "image_edit.completed",
        "error",
    }
)
# Cheap byte tests (in C) before an event is parsed to see whether it is one of those.
_TERMINAL_HINT = re.compile(rb"\.completed|\.done|\.failed|\.incomplete|error")


class SseScanner:
    """Splits an SSE byte stream into whole events as they complete; never holds more than one event.

    `done` tells whether the stream reached its own end (`[DONE]` in either spacing, or a terminal
    event); unknown event types pass through untouched. With `strip_usage` (the gateway asked for
    usage the client did not), the extra usage chunk is removed and the `"usage":null` that
    include_usage adds to every chunk is taken out, so the client receives what Azure would have sent.

    Every event is relayed, so the common one costs a few byte scans in C: only an event that carries
    a `usage` other than null (one per stream) or may be a terminal event is parsed.
    """

    __slots__ = ("_buffer", "_strip", "done", "model", "usage")

    def __init__(self, strip_usage: bool = False) -> None:
        self._buffer = b""
        self._strip = strip_usage
        self.usage: TokenUsage | None = None
        self.model = ""  # from the event that carries the usage
        self.done = False

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer + data if self._buffer else data
        out: list[bytes] = []
        if b"\r" not in buffer:
            # LF-only framing, what Azure sends: every event ends at a blank line, the last piece is incomplete.
            *events, self._buffer = buffer.split(b"\n\n")
            for event in events:
                forwarded = self._event(event + b"\n\n")
                if forwarded:
                    out.append(forwarded)
            return out
        while True:
            cut = _event_end(buffer)
            if cut < 0:
                self._buffer = buffer
                return out
            event, buffer = buffer[:cut], buffer[cut:]
            forwarded = self._event(event)
            if forwarded:
                out.append(forwarded)

    def flush(self) -> bytes:
        """Whatever trails the last complete event (a well-formed stream leaves nothing)."""
        rest, self._buffer = self._buffer, b""
        return rest

    def _event(self, event: bytes) -> bytes:
        if b"[DONE]" in event and _is_done(event):
            self.done = True
            return event
        if _maybe_typed(event) and _TERMINAL_HINT.search(event) is not None and event_type(event) in TERMINAL_EVENTS:
            self.done = True
        mentions = event.count(_USAGE_KEY)
        if not mentions:
            return event
        if mentions == event.count(_NULL_USAGE):
            # Every usage in it is null (include_usage marks each chunk so): nothing to read.
            return event.replace(_USAGE_NULL, b"") if self._strip else event
        payload = data_payload(event)
        if isinstance(payload, dict):
            self.model = model_of(payload) or self.model
            response = payload.get("response")
            if isinstance(response, dict) and response.get("usage") is not None:
                self.usage = usage_tokens(response["usage"])  # response.completed carries the whole response
            elif payload.get("usage") is not None:
                self.usage = usage_tokens(payload["usage"])
                if self._strip and payload.get("choices") == []:
                    return b""
        return event.replace(_USAGE_NULL, b"") if self._strip else event


def _maybe_typed(event: bytes) -> bool:
    """Could `event_type` find a name: an `event:` line, or a `type` key (spelled out, or with \\u escapes)?"""
    return b"event:" in event or b"type" in event or b"\\u" in event


def _is_done(event: bytes) -> bool:
    return any(line.startswith(b"data:") and line[5:].strip() == b"[DONE]" for line in event.splitlines())


def event_type(event: bytes) -> str | None:
    """The SSE `event:` name, else the JSON payload's `type`."""
    for line in event.splitlines():
        if line.startswith(b"event:"):
            return line[6:].strip().decode("utf-8", "replace")
    payload = data_payload(event)
    kind = payload.get("type") if isinstance(payload, dict) else None
    return kind if isinstance(kind, str) else None


def _event_end(buffer: bytes) -> int:
    """Index just past the first event terminator (blank line), or -1."""
    best = -1
    for terminator in (b"\n\n", b"\r\n\r\n"):
        i = buffer.find(terminator)
        if i >= 0 and (best < 0 or i + len(terminator) < best):
            best = i + len(terminator)
    return best


def data_payload(event: bytes) -> Any:
    """The JSON of one SSE event's data lines; None when it is not JSON."""
    lines = [line[5:].lstrip() for line in event.splitlines() if line.startswith(b"data:")]
    return json_or_none(b"\n".join(lines))
