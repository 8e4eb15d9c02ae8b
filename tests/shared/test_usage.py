"""Cost estimates (Azure's admission arithmetic), usage from JSON, and the SSE scanner."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared import usage as usage_module
from shared.ledger import TokenUsage
from shared.usage import SseScanner, estimate, json_or_none, supports_stream_usage, usage_of, wants_stream_usage


def cost(operation: str, body: dict[str, Any] | None, default: int) -> int:
    return sum(estimate(operation, body, default))


DEFAULT = 4096


def chat(*contents: Any, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": c} for c in contents], **extra}


# chat: ceil(characters of all contents / 4) + 4 per message + completion budget x choices


def test_chat_counts_characters_and_messages() -> None:
    assert cost("chat/completions", chat("abcdefgh", max_tokens=100), DEFAULT) == 2 + 4 + 100
    # characters add up across messages before rounding: 3 + 5 = 8 chars = 2 tokens
    assert cost("chat/completions", chat("abc", "abcde", max_tokens=10), DEFAULT) == 2 + 8 + 10
    assert cost("chat/completions", chat("a", max_tokens=10), DEFAULT) == 1 + 4 + 10


def test_chat_counts_the_text_parts_of_multi_part_content() -> None:
    content = [
        {"type": "text", "text": "abcd"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        {"type": "text", "text": "efgh"},
    ]
    assert cost("chat/completions", chat(content, max_tokens=1), DEFAULT) == 2 + 4 + 1


def test_chat_counts_tool_definitions() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    without = cost("chat/completions", chat("hi", max_tokens=1), DEFAULT)
    with_tools = cost("chat/completions", chat("hi", max_tokens=1, tools=tools), DEFAULT)
    assert with_tools - without == math.ceil(len(json.dumps(tools)) / 4)


def test_default_completion_budget_when_absent_or_invalid() -> None:
    assert cost("chat/completions", chat("abcd"), DEFAULT) == 1 + 4 + DEFAULT
    assert cost("chat/completions", chat("abcd"), 16) == 1 + 4 + 16
    for bad in (0, -5, "100", True, None):
        assert cost("chat/completions", chat("abcd", max_tokens=bad), 16) == 1 + 4 + 16


def test_max_completion_tokens_is_a_budget_too() -> None:
    assert cost("chat/completions", chat("abcd", max_completion_tokens=50), DEFAULT) == 1 + 4 + 50


def test_choices_multiply_the_completion_budget() -> None:
    assert cost("chat/completions", chat("abcd", max_tokens=10, n=3), DEFAULT) == 5 + 30
    assert cost("completions", {"prompt": "abcd", "max_tokens": 10, "best_of": 4, "n": 2}, DEFAULT) == 1 + 40


def test_completions_prompt_forms() -> None:
    assert cost("completions", {"prompt": "abcdefgh", "max_tokens": 16}, DEFAULT) == 2 + 16
    assert cost("completions", {"prompt": ["abcd", "abcdefgh"], "max_tokens": 1}, DEFAULT) == 3 + 1
    assert cost("completions", {"prompt": [10, 20, 30], "max_tokens": 1}, DEFAULT) == 3 + 1


def test_embeddings_count_input_only() -> None:
    assert cost("embeddings", {"input": "abcdefgh", "max_tokens": 999}, DEFAULT) == 2
    assert cost("embeddings", {"input": ["abcd", "abcdefghi"]}, DEFAULT) == 1 + 3
    assert cost("embeddings", {"input": [1, 2, 3, 4, 5]}, DEFAULT) == 5
    assert cost("embeddings", {"input": [[1, 2], [3, 4, 5]]}, DEFAULT) == 5
    assert cost("embeddings", {}, DEFAULT) == 0


def test_responses_count_input_instructions_and_output_budget() -> None:
    body = {"input": "abcdefgh", "instructions": "abcd", "max_output_tokens": 50}
    assert cost("responses", body, DEFAULT) == 2 + 1 + 50
    items = {"input": [{"role": "user", "content": [{"type": "input_text", "text": "abcdefgh"}]}]}
    assert cost("responses", items, 7) == 2 + 4 + 7


@pytest.mark.parametrize("operation", ["images/generations", "audio/transcriptions", "audio/speech", "unknown"])
def test_operations_without_token_quota_cost_nothing(operation: str) -> None:
    assert cost(operation, {"prompt": "a cat", "input": "hello", "max_tokens": 10}, DEFAULT) == 0


def test_no_body_costs_nothing() -> None:
    assert cost("chat/completions", None, DEFAULT) == 0


@given(st.text(max_size=200), st.integers(1, 10**6), st.integers(1, 10**6), st.integers(1, 5))
def test_estimate_is_monotonic_in_max_tokens(prompt: str, a: int, b: int, n: int) -> None:
    low, high = sorted((a, b))
    cost_low = cost("chat/completions", chat(prompt, max_tokens=low, n=n), DEFAULT)
    cost_high = cost("chat/completions", chat(prompt, max_tokens=high, n=n), DEFAULT)
    assert cost_high - cost_low == (high - low) * n


@pytest.mark.parametrize(
    ("body", "tokens"),
    [
        (b'{"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}', TokenUsage(10, 5)),
        (b'{"usage":{"prompt_tokens":10,"completion_tokens":5}}', TokenUsage(10, 5)),
        (b'{"usage":{"prompt_tokens":8,"total_tokens":8}}', TokenUsage(8, 0)),  # embeddings
        (b'{"usage":{"total_tokens":8}}', TokenUsage(8, 0)),
        (b'{"object":"response","usage":{"input_tokens":3,"output_tokens":4,"total_tokens":7}}', TokenUsage(3, 4)),
        (b'{"type":"response.completed","response":{"usage":{"input_tokens":3,"output_tokens":4}}}', TokenUsage(3, 4)),
        (b'{"usage":{"prompt_tokens":-3,"completion_tokens":true}}', None),
        (b'{"usage":null}', None),
        (b'{"id":"x"}', None),
        (b"[1, 2]", None),
        (b"not json", None),
        (b"\xff\xfe", None),
        (b'{"response":"ok"}', None),  # valid JSON whose "response" is not an object
    ],
)
def test_usage_from_json(body: bytes, tokens: TokenUsage | None) -> None:
    assert usage_of(json_or_none(body)) == tokens  # as the dispatcher reads an answer: parsed once


@pytest.mark.parametrize(
    ("version", "supported"),
    [
        (None, True),
        ("", True),
        ("preview", True),
        ("v1", True),
        ("2024-09-01-preview", True),
        ("2024-10-21", True),
        ("2025-04-01-preview", True),
        ("2024-08-01-preview", False),
        ("2024-06-01", False),
        ("2023-05-15", False),
    ],
)
def test_supports_stream_usage(version: str | None, supported: bool) -> None:
    assert supports_stream_usage(version) is supported


def test_wants_stream_usage() -> None:
    assert wants_stream_usage({"stream_options": {"include_usage": True}})
    assert not wants_stream_usage({"stream_options": {"include_usage": "true"}})
    assert not wants_stream_usage({"stream": True})


# An Azure stream as the gateway receives it after adding include_usage for its own accounting.
FILTER = b'data: {"choices":[],"id":"","prompt_filter_results":[{"prompt_index":0}],"usage":null}\n\n'
CHUNK1 = b'data: {"choices":[{"delta":{"content":"Hel"},"index":0}],"id":"c1","usage":null}\n\n'
CHUNK2 = b'data: {"choices":[{"delta":{"content":"lo"},"index":0}],"id":"c1","usage":null}\n\n'
USAGE = b'data: {"choices":[],"id":"c1","usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}\n\n'
DONE = b"data: [DONE]\n\n"
STREAM = FILTER + CHUNK1 + CHUNK2 + USAGE + DONE


def scan(data: bytes, cuts: list[int], strip: bool) -> tuple[bytes, SseScanner]:
    scanner = SseScanner(strip_usage=strip)
    out = b""
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        out += b"".join(scanner.feed(data[start:cut]))
        start = cut
    return out + scanner.flush(), scanner


def test_passes_the_stream_through_and_captures_usage() -> None:
    out, scanner = scan(STREAM, [], strip=False)
    assert out == STREAM
    assert scanner.usage == TokenUsage(9, 2)
    assert scanner.done


def test_strip_usage_gives_the_client_what_azure_would_have_sent() -> None:
    out, scanner = scan(STREAM, [], strip=True)
    expected = (FILTER + CHUNK1 + CHUNK2).replace(b',"usage":null', b"") + DONE
    assert out == expected
    assert b"usage" not in out
    assert scanner.usage == TokenUsage(9, 2)  # the gateway still learns it


def test_feed_returns_whole_events_only() -> None:
    scanner = SseScanner()
    assert scanner.feed(CHUNK1[:10]) == []
    assert scanner.feed(CHUNK1[10:] + CHUNK2[:-1]) == [CHUNK1]
    assert scanner.feed(CHUNK2[-1:]) == [CHUNK2]
    assert not scanner.done
    assert scanner.feed(DONE) == [DONE]
    assert scanner.done


def test_crlf_delimited_events() -> None:
    stream = STREAM.replace(b"\n\n", b"\r\n\r\n")
    scanner = SseScanner()
    events = scanner.feed(stream)
    assert len(events) == 5
    assert b"".join(events) == stream
    assert scanner.usage == TokenUsage(9, 2)
    assert scanner.done
    stripped, _ = scan(stream, [], strip=True)
    expected = (FILTER + CHUNK1 + CHUNK2).replace(b',"usage":null', b"") + DONE
    assert stripped == expected.replace(b"\n\n", b"\r\n\r\n")


def test_a_truncated_stream_leaves_its_tail_to_flush() -> None:
    scanner = SseScanner()
    assert scanner.feed(CHUNK1 + CHUNK2[:20]) == [CHUNK1]
    assert scanner.flush() == CHUNK2[:20]
    assert scanner.flush() == b""
    assert scanner.usage is None
    assert not scanner.done


@given(st.lists(st.integers(0, len(STREAM)), max_size=12), st.booleans(), st.booleans())
def test_chunk_boundaries_do_not_matter(cuts: list[int], crlf: bool, strip: bool) -> None:
    stream = STREAM.replace(b"\n\n", b"\r\n\r\n") if crlf else STREAM
    whole, _ = scan(stream, [], strip)
    split, scanner = scan(stream, cuts, strip)
    assert split == whole
    if not strip:
        assert split == stream
    assert scanner.usage == TokenUsage(9, 2)
    assert scanner.done


def test_a_responses_stream_ends_with_response_completed_and_carries_usage_inside() -> None:
    created = b'event: response.created\ndata: {"type":"response.created","response":{"id":"r","usage":null}}\n\n'
    delta = b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"hi"}\n\n'
    usage = b'"usage":{"input_tokens":3,"output_tokens":1,"total_tokens":4}'
    completed = (
        b'event: response.completed\ndata: {"type":"response.completed","response":{"id":"r",' + usage + b"}}\n\n"
    )
    scanner = SseScanner(strip_usage=False)
    assert scanner.feed(created + delta) == [created, delta]
    assert not scanner.done and scanner.usage is None
    assert scanner.feed(completed) == [completed]
    assert scanner.done and scanner.usage == TokenUsage(3, 1)


def test_done_without_the_space_ends_a_stream_too() -> None:
    _, scanner = scan(CHUNK1 + b"data:[DONE]\n\n", [], strip=False)
    assert scanner.done


def test_data_that_merely_mentions_done_does_not_end_it() -> None:
    _, scanner = scan(b'data: {"choices":[{"delta":{"content":"[DONE] is the marker"}}]}\n\n', [], strip=False)
    assert not scanner.done


@pytest.mark.parametrize(
    "terminal",
    [
        b'data: {"type":"transcript.text.done","text":"hi","usage":{"input_tokens":5,"output_tokens":2}}\n\n',
        b'data: {"type":"speech.audio.done","usage":{"input_tokens":5,"output_tokens":2,"total_tokens":7}}\n\n',
        b'event: image_generation.completed\ndata: {"type":"image_generation.completed","b64_json":"",'
        b'"usage":{"input_tokens":5,"output_tokens":2}}\n\n',
        b'data: {"type":"image_edit.completed","usage":{"input_tokens":5,"output_tokens":2}}\n\n',
    ],
    ids=["transcript", "speech", "image-generation", "image-edit"],
)
def test_audio_and_image_streams_end_with_their_own_terminal_event(terminal: bytes) -> None:
    delta = b'data: {"type":"transcript.text.delta","delta":"h"}\n\n'
    unknown = b'event: something.new\ndata: {"type":"something.new","done":false}\n\n'
    out, scanner = scan(delta + unknown + terminal, [], strip=False)
    assert out == delta + unknown + terminal  # unknown events pass through
    assert scanner.done
    assert scanner.usage == TokenUsage(5, 2)


def test_an_error_event_ends_a_stream_by_its_own_format() -> None:
    _, scanner = scan(b'event: error\ndata: {"type":"error","message":"bad"}\n\n', [], strip=False)
    assert scanner.done


class ReferenceScanner:
    """SseScanner as it was before its fast paths: parse every event that mentions usage, cut one event at a
    time. The one intended difference: an event whose data is not JSON loses its `,"usage":null` too when
    stripping (the fast path cannot tell, and the marker is the gateway's own doing either way)."""

    def __init__(self, strip_usage: bool = False) -> None:
        self._buffer = b""
        self._strip = strip_usage
        self.usage: TokenUsage | None = None
        self.done = False

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        out: list[bytes] = []
        while True:
            cut = usage_module._event_end(self._buffer)
            if cut < 0:
                return out
            event, self._buffer = self._buffer[:cut], self._buffer[cut:]
            forwarded = self._event(event)
            if forwarded:
                out.append(forwarded)

    def _event(self, event: bytes) -> bytes:
        if b"[DONE]" in event and usage_module._is_done(event):
            self.done = True
            return event
        hints = (b".completed", b".done", b".failed", b".incomplete", b"error")
        if any(hint in event for hint in hints) and usage_module.event_type(event) in usage_module.TERMINAL_EVENTS:
            self.done = True
        if b'"usage"' not in event:
            return event
        payload = usage_module.data_payload(event)
        if isinstance(payload, dict):
            response = payload.get("response")
            if isinstance(response, dict) and response.get("usage") is not None:
                self.usage = usage_module.usage_tokens(response["usage"])
            elif payload.get("usage") is not None:
                self.usage = usage_module.usage_tokens(payload["usage"])
                if self._strip and payload.get("choices") == []:
                    return b""
        return event.replace(b',"usage":null', b"") if self._strip else event


# Events meant to trip a scanner that looks at bytes before it parses.
TRICKY_EVENTS = [
    FILTER,
    CHUNK1,
    USAGE,
    DONE,
    b"data:[DONE]\n\n",
    b'data: {"choices":[{"delta":{"content":"say \\"usage\\":null"}}],"usage":null}\n\n',  # quoted in content
    b'data: {"choices":[{"delta":{"content":"usage"}}],"usage":null}\n\n',
    b'data: {"choices":[],"usage": null}\n\n',  # spaced: parsed, null
    b'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}, "x":{"usage":null}}\n\n',
    b'data: {"choices":[{"index":0}],"usage":{"prompt_tokens":4,"completion_tokens":5}}\n\n',  # usage, not the chunk
    b'data: {"name":"usage","usage":null}\n\n',  # a value that looks like the key
    b'data: not json, "usage":null\n\n',
    b'data: {"usage":nullx}\n\n',
    b'event: response.created\ndata: {"type":"response.created","response":{"id":"r","usage":null}}\n\n',
    b'event: response.completed\ndata: {"type":"response.completed","response":{"usage":{"input_tokens":3}}}\n\n',
    b'data: {"type":"response.failed","response":{"usage":null}}\n\n',
    b'data: {"type":"transcript.text.done","usage":{"input_tokens":5,"output_tokens":2}}\n\n',
    b'data: {"error":{"code":"x"},"text":"an error happened"}\n\n',
    b"event: error\ndata: {}\n\n",
    b'data: {"\\u0074ype":"error"}\n\n',  # an escaped key is still the type
    b": a comment line\n\n",
    b"\n\n",
    b'data: {"a":1}\ndata: {"b":2,"usage":null}\n\n',  # two data lines: not one JSON value
    b'data: {"choices":[],"usage":{"total_tokens":7}}\r\n\r\n',
    b"data: [DONE]\r\n\r\n",
    b'data: {"choices":[{"delta":{"content":"\\r\\n"}}],"usage":null}\r\n\r\n',
    b"data: partial without its end",
]


@given(
    st.lists(st.sampled_from(TRICKY_EVENTS), max_size=10),
    st.lists(st.integers(0, 2000), max_size=8),
    st.booleans(),
)
def test_the_fast_scanner_answers_as_the_reference_does(events: list[bytes], cuts: list[int], strip: bool) -> None:
    stream = b"".join(events)
    fast, reference = SseScanner(strip_usage=strip), ReferenceScanner(strip_usage=strip)
    start = 0
    for cut in [*sorted(c for c in cuts if c <= len(stream)), len(stream)]:
        piece = stream[start:cut]
        assert fast.feed(piece) == reference.feed(piece)
        assert (fast.usage, fast.done) == (reference.usage, reference.done)
        start = cut
    assert fast.flush() == reference._buffer


@pytest.mark.parametrize("event", TRICKY_EVENTS)
@pytest.mark.parametrize("strip", [False, True])
def test_each_tricky_event_alone_answers_as_the_reference(event: bytes, strip: bool) -> None:
    fast, reference = SseScanner(strip_usage=strip), ReferenceScanner(strip_usage=strip)
    assert fast.feed(event) == reference.feed(event)
    assert (fast.usage, fast.done, fast.flush()) == (reference.usage, reference.done, reference._buffer)


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


@given(
    st.dictionaries(st.text(max_size=8).filter(lambda k: k != "stream_options"), _JSON_VALUES, min_size=1),
    st.sampled_from(["", " ", "\n\t ", "\r\n"]),
    st.booleans(),
    st.booleans(),
)
def test_the_spliced_usage_request_reads_as_the_rewritten_one(
    body: dict[str, Any], space: str, ascii_only: bool, indent: bool
) -> None:
    raw = (space + json.dumps(body, ensure_ascii=ascii_only, indent=2 if indent else None)).encode()
    spliced = usage_module.with_stream_usage(raw, body)
    assert spliced is not None
    assert json.loads(spliced) == {**body, "stream_options": {"include_usage": True}}
    assert spliced.endswith(raw.lstrip()[1:])  # the client's own bytes, untouched


@pytest.mark.parametrize(
    "raw",
    [
        b'{"stream":true,"stream_options":{"include_usage":false}}',  # merged by rewriting instead
        '{"stream":true}'.encode("utf-16"),
        b'\xef\xbb\xbf{"stream":true}',
        b"{}",
    ],
)
def test_bodies_that_must_be_rewritten_are_not_spliced(raw: bytes) -> None:
    assert usage_module.with_stream_usage(raw, json.loads(raw)) is None
