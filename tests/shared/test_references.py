"""references: the objects a request names (path and body) and those an answer creates."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.errors import GatewayError
from shared.references import created, named, object_key, session_key
from shared.routes import match


def names(method: str, path: str, body: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    return named(match(method, path), body, json.dumps(body).encode() if body else b"")


def test_keys_are_namespaced_and_sessions_are_per_owner() -> None:
    assert object_key("response", "resp_1") == "response:resp_1"
    assert session_key({"x-session-id": "chat-42"}, "app-a") == "session:app-a:chat-42"
    assert session_key({}, "app-a") is None
    for bad in ("", "a/b", "a b", "x" * 129, "resp:1"):
        with pytest.raises(GatewayError) as caught:
            session_key({"x-session-id": bad}, "app-a")
        assert caught.value.status == 400


def test_the_path_names_its_root() -> None:
    assert names("GET", "/openai/v1/responses/resp_1") == [("response", "resp_1")]
    assert names("GET", "/openai/files/file-1/content") == [("file", "file-1")]
    assert names("POST", "/openai/threads/thread_1/runs/run_1/cancel") == [("thread", "thread_1")]
    assert names("POST", "/openai/files") == []


@pytest.mark.parametrize(
    ("method", "path", "body", "expected"),
    [
        ("POST", "/openai/v1/responses", {"model": "m", "previous_response_id": "resp_0"}, [("response", "resp_0")]),
        ("POST", "/openai/responses", {"model": "m", "conversation": "conv_1"}, [("conversation", "conv_1")]),
        (
            "POST",
            "/openai/v1/responses",
            {"model": "m", "conversation": {"id": "conv_1"}},
            [("conversation", "conv_1")],
        ),
        (
            "POST",
            "/openai/v1/responses",
            {"model": "m", "tools": [{"type": "file_search", "vector_store_ids": ["vs_1", "vs_2"]}]},
            [("vector_store", "vs_1"), ("vector_store", "vs_2")],
        ),
        (
            "POST",
            "/openai/v1/responses",
            {"model": "m", "tools": [{"type": "code_interpreter", "container": "cntr_1"}]},
            [("container", "cntr_1")],
        ),
        (
            "POST",
            "/openai/v1/responses",
            {
                "model": "m",
                "tools": [{"type": "code_interpreter", "container": {"type": "auto", "file_ids": ["file-1"]}}],
            },
            [("file", "file-1")],
        ),
        (
            "POST",
            "/openai/v1/responses",
            {"model": "m", "input": [{"type": "reasoning", "id": "rs_1", "encrypted_content": "x"}]},
            [("reasoning", "rs_1")],
        ),
        ("POST", "/openai/batches", {"input_file_id": "file-1"}, [("file", "file-1")]),
        (
            "POST",
            "/openai/assistants",
            {
                "tool_resources": {
                    "code_interpreter": {"file_ids": ["file-1"]},
                    "file_search": {"vector_store_ids": ["vs_1"]},
                }
            },
            [("file", "file-1"), ("vector_store", "vs_1")],
        ),
        ("POST", "/openai/threads/runs", {"assistant_id": "asst_1", "thread": {}}, [("assistant", "asst_1")]),
        (
            "POST",
            "/openai/threads/thread_1/messages",
            {"role": "user", "content": "x", "attachments": [{"file_id": "file-1"}]},
            [("thread", "thread_1"), ("file", "file-1")],
        ),
        (
            "POST",
            "/openai/vector_stores/vs_1/files",
            {"file_id": "file-1"},
            [("vector_store", "vs_1"), ("file", "file-1")],
        ),
        ("POST", "/openai/v1/containers", {"name": "c", "file_ids": ["file-1"]}, [("file", "file-1")]),
        ("POST", "/openai/vector_stores", {"name": "v", "metadata": {"file_id": "not-a-reference"}}, []),
        ("POST", "/openai/deployments/d/chat/completions", {"messages": [{"role": "user", "content": "file_id"}]}, []),
    ],
)
def test_body_fields_name_objects_wherever_they_sit(
    method: str, path: str, body: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    assert names(method, path, body) == expected


def test_a_malformed_reference_is_the_clients_error() -> None:
    for body in ({"previous_response_id": "a/b"}, {"input_file_id": 7}, {"vector_store_ids": ["vs 1"]}):
        with pytest.raises(GatewayError) as caught:
            names("POST", "/openai/v1/responses", {"model": "m", **body})
        assert caught.value.status == 400


def test_what_an_answer_creates() -> None:
    response = {"id": "resp_abc", "object": "response", "output": [{"type": "reasoning", "id": "rs_1"}]}
    create = match("POST", "/openai/v1/responses")
    assert created(create, response) == [("response", "resp_abc"), ("reasoning", "rs_1")]
    assert created(create, {"type": "response.created", "response": response}) == [
        ("response", "resp_abc"),
        ("reasoning", "rs_1"),
    ]
    assert created(match("POST", "/openai/files"), {"id": "file-1", "object": "file"}) == [("file", "file-1")]
    run = {"id": "run_1", "object": "thread.run", "thread_id": "thread_9"}
    assert created(match("POST", "/openai/threads/runs"), run) == [("thread", "thread_9")]
    assert (
        created(match("POST", "/openai/threads/thread_9/messages"), {"id": "msg_1", "object": "thread.message"}) == []
    )
    done = {"id": "batch_1", "object": "batch", "output_file_id": "file-out", "error_file_id": None}
    assert created(match("GET", "/openai/batches/batch_1"), done) == [("file", "file-out")]  # read, not created
    assert created(create, {"id": "../x", "object": "response"}) == []
    assert created(create, [response]) == []
    assert (
        created(match("POST", "/openai/deployments/d/chat/completions"), {"id": "c", "object": "chat.completion"}) == []
    )


def test_a_field_name_spelled_with_json_escapes_still_names_its_object() -> None:
    """`\\u005f` is `_` to the JSON parser (and to Azure): the walk must not be skipped for it."""
    raw = b'{"model": "gpt-4o", "input": "hi", "previous\\u005fresponse\\u005fid": "resp_A"}'
    body = json.loads(raw)
    assert named(match("POST", "/openai/v1/responses"), body, raw) == [("response", "resp_A")]
