"""inbound.parse_body: JSON for routing and cost, bounded in depth; other bodies untouched."""

from __future__ import annotations

import pytest

from shared.errors import GatewayError
from shared.inbound import _STRING, parse_body


def test_json_objects_are_parsed_and_other_bodies_pass() -> None:
    assert parse_body(b'{"a": [1, {"b": 2}]}', "application/json", 10) == {"a": [1, {"b": 2}]}
    assert parse_body(b"--b--", "multipart/form-data; boundary=b", 10) is None
    assert parse_body(b"", "application/json", 10) is None


@pytest.mark.parametrize("body", [b"[1]", b'"x"', b"null"])
def test_a_body_that_is_not_an_object_is_a_400(body: bytes) -> None:
    with pytest.raises(GatewayError) as caught:
        parse_body(body, "application/json", 10)
    assert (caught.value.status, caught.value.code) == (400, "invalid_body")


def test_nesting_past_the_bound_is_a_400_brackets_in_strings_do_not_count() -> None:
    assert parse_body(b'{"a": "' + b"[" * 50 + b'"}', "application/json", 3) == {"a": "[" * 50}
    assert parse_body(b'{"a": [[1]]}', "application/json", 3) == {"a": [[1]]}
    with pytest.raises(GatewayError) as caught:
        parse_body(b'{"a": [[[1]]]}', "application/json", 3)
    assert (caught.value.status, caught.value.code) == (400, "invalid_json")
    many_shallow = b'{"a": [' + b",".join([b"[1]"] * 500) + b"]}"  # many brackets, depth 3
    assert len(parse_body(many_shallow, "application/json", 3)["a"]) == 500  # type: ignore[index]


def test_nesting_deeper_than_python_can_parse_is_still_a_400() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(GatewayError) as caught:
        parse_body(b'{"a": ' + deep + b"}", "application/json", 100_000_000)
    assert caught.value.status == 400


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_a_json_object_is_read_whatever_its_label(content_type: str) -> None:
    """Routing, cost and the objects a body names must not depend on a label the upstream may not check."""
    assert parse_body(b' {"previous_response_id": "resp_A"}', content_type, 10) == {"previous_response_id": "resp_A"}
    assert parse_body(b"a=1&b=2", content_type, 10) is None
    assert parse_body(b'{"a": 1}', "multipart/form-data; boundary=b", 10) is None


def test_an_unclosed_string_is_scanned_in_linear_time() -> None:
    """The string pattern of the depth check matches an unclosed string to the end at once: before, an
    unclosed quote followed by escaped quotes backtracked quadratically (32 KB froze the event loop for 3 s)."""
    tail = b'"' + b'\\"' * 1000
    match = _STRING.match(tail)
    assert match is not None and match.end() == len(tail)
    with pytest.raises(GatewayError) as caught:
        parse_body(b"{" * 200 + tail, "application/json", 100)
    assert caught.value.status == 400
