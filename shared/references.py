"""The stateful objects a request names (in its path and in its body) and those an answer creates.

Objects live in one Azure OpenAI resource, so a request naming one must go there; one naming
objects of two resources cannot be served at all. Body fields that name objects: previous_response_id,
conversation, assistant_id, input_file_id, file_id(s), vector_store_ids, a code-interpreter container,
and reasoning items (`rs_...`) whose encrypted content only their resource can read; wherever they
sit (tools, tool_resources, attachments, messages, a thread to create and run).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from shared.errors import GatewayError
from shared.routes import OBJECT_ID_PATTERN, TOP_LEVEL_KINDS, Route, valid_object_id

DAY = 24 * 3600.0
# How long a record is kept: stored responses (and their reasoning items) live 30 days in Azure; the rest
# until deleted (a DELETE through the gateway removes the record at once).
TTL = {"response": 30 * DAY, "reasoning": 30 * DAY, "conversation": 30 * DAY}
DEFAULT_TTL = 365 * DAY
SESSION_TTL = 3600.0
SESSION_HEADER = "x-session-id"

# Body field -> the kind of object it names (a string, a list of strings, or {"id": ...}).
_FIELDS = {
    "previous_response_id": "response",
    "conversation": "conversation",
    "assistant_id": "assistant",
    "input_file_id": "file",
    "file_id": "file",
    "file_ids": "file",
    "vector_store_ids": "vector_store",
    "container": "container",
}
# Only bodies containing one of these can name an object: the walk is skipped for everything else. A JSON
# escape (`\u005f` for `_`) can spell any of them, so a body with one is always walked.
_MARKERS = (b"_id", b"conversation", b"container", b"rs_", b"\\")


def ttl(kind: str) -> float:
    return TTL.get(kind, DEFAULT_TTL)


def object_key(kind: str, object_id: str) -> str:
    # Namespaced, so that no client-chosen session id can overwrite where an object lives.
    return f"{kind}:{object_id}"


def session_key(headers: Mapping[str, str], owner: str) -> str | None:
    """The opt-in session of a request, or None; sessions are per owner; a malformed one is the client's error."""
    session = headers.get(SESSION_HEADER)
    if session is None:
        return None
    if not valid_object_id(session):
        raise GatewayError(400, "invalid_session_id", f"{SESSION_HEADER} must match {OBJECT_ID_PATTERN}.")
    return f"session:{owner}:{session}"


def named(route: Route, body: Mapping[str, Any] | None, raw: bytes) -> list[tuple[str, str]]:
    """(kind, id) of every object the request must go home to, the path's first."""
    found: list[tuple[str, str]] = [route.root] if route.root is not None else []
    if body is not None and any(marker in raw for marker in _MARKERS):
        for reference in _walk(body):
            if reference not in found:
                found.append(reference)
    return found


def _walk(value: Any) -> Iterator[tuple[str, str]]:
    if isinstance(value, list):
        for item in value:
            yield from _walk(item)
        return
    if not isinstance(value, dict):
        return
    if value.get("type") == "reasoning" and isinstance(value.get("id"), str):
        yield "reasoning", _checked(value["id"], "id")
    for name, item in value.items():
        kind = _FIELDS.get(name)
        if name == "metadata":
            continue  # the client's own key-value pairs: a "file_id" there names nothing
        if kind is None:
            yield from _walk(item)
        elif name == "container" and not isinstance(item, str):
            yield from _walk(item)  # {"type": "auto", "file_ids": [...]}: a new container, maybe with files
        else:
            yield from ((kind, object_id) for object_id in _ids(item, name))


def _ids(value: Any, name: str) -> list[str]:
    if isinstance(value, dict) and "id" in value:  # "conversation": {"id": ...}
        value = value["id"]
    if value is None:
        return []
    return [_checked(v, name) for v in (value if isinstance(value, list) else [value])]


def _checked(value: Any, name: str) -> str:
    if not isinstance(value, str) or not valid_object_id(value):
        raise GatewayError(400, f"invalid_{name}", f"{name} must name an object id matching {OBJECT_ID_PATTERN}.")
    return value


def created(route: Route, payload: Any) -> list[tuple[str, str]]:
    """(kind, id) of the objects an answer tells of that the gateway must record: the new object, the thread a
    create-and-run made, the files a batch wrote, the reasoning items of a response. Empty for anything else."""
    if not isinstance(payload, dict):
        return []
    if payload.get("type") in ("response.created", "response.completed"):  # a Responses stream's events
        payload = payload.get("response")
        if not isinstance(payload, dict):
            return []
    found: list[tuple[str, str]] = []
    kind, object_id = payload.get("object"), payload.get("id")
    if route.creates and kind in TOP_LEVEL_KINDS and isinstance(object_id, str) and valid_object_id(object_id):
        found.append((str(kind), object_id))
    thread = payload.get("thread_id")
    if route.operation == "threads/runs" and isinstance(thread, str) and valid_object_id(thread):
        found.append(("thread", thread))
    if kind == "batch":
        for name in ("output_file_id", "error_file_id"):
            file_id = payload.get(name)
            if isinstance(file_id, str) and valid_object_id(file_id):
                found.append(("file", file_id))
    if kind == "response":
        for item in payload.get("output") or []:
            if isinstance(item, dict) and item.get("type") == "reasoning" and valid_object_id(str(item.get("id"))):
                found.append(("reasoning", str(item["id"])))
    return found
