"""The Azure OpenAI data-plane paths the gateway serves, parsed into what routing needs.

Only whitelisted operations are forwarded, and the upstream path is rebuilt from validated parts,
so nothing in a client's path can change which host or which path upstream receives.

Two kinds of path:
- model operations (chat/completions, embeddings, responses, images, audio): on the deployments
  surface `/openai/deployments/{deployment}/{operation}`, or with the deployment in the body's
  `model` on `/openai/v1/{operation}` (and `/openai/responses`, the Azure-style Responses surface);
- stateful objects, a table of collections: `{collection}[/{id}[/{child}[/{id}...]]][/{action}]` on
  the surfaces Azure offers each (`/openai/...?api-version=` "classic", `/openai/v1/...`). A nested
  object lives where its root lives (a run in its thread's resource), so the root names the home.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

from shared.errors import GatewayError

OPERATIONS = frozenset(
    {
        "chat/completions",
        "completions",
        "embeddings",
        "responses",
        "images/generations",
        "images/edits",
        "audio/transcriptions",
        "audio/translations",
        "audio/speech",
    }
)
# Operations of the /openai/deployments/{name}/... surface (Responses is not one of them).
DEPLOYMENT_OPERATIONS = OPERATIONS - {"responses"}
CLASSIC, V1 = "classic", "v1"
BOTH = frozenset({CLASSIC, V1})


@dataclass(frozen=True)
class Collection:
    """Objects of one kind under one path segment, and what may be done to them."""

    segment: str
    kind: str
    surfaces: frozenset[str] = BOTH
    create: bool = True  # POST on the collection
    listing: bool = True  # GET on the collection
    item: tuple[str, ...] = ("GET", "DELETE")  # methods on /{id}
    actions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # /{id}/{action} -> methods
    children: tuple[Collection, ...] = ()

    def child(self, segment: str) -> Collection | None:
        return next((c for c in self.children if c.segment == segment), None)


_STEPS = Collection("steps", "thread.run.step", create=False, item=("GET",))
COLLECTIONS: tuple[Collection, ...] = (
    # Responses are created by the "responses" model operation; here: reading, deleting, their input items.
    Collection(
        "responses", "response", create=False, listing=False, actions={"input_items": ("GET",), "cancel": ("POST",)}
    ),
    Collection(
        "conversations",
        "conversation",
        frozenset({V1}),
        listing=False,
        item=("GET", "POST", "DELETE"),
        children=(Collection("items", "conversation.item", item=("GET", "DELETE")),),
    ),
    Collection("files", "file", actions={"content": ("GET",)}),
    Collection("batches", "batch", item=("GET",), actions={"cancel": ("POST",)}),
    Collection(
        "vector_stores",
        "vector_store",
        item=("GET", "POST", "DELETE"),
        actions={"search": ("POST",)},
        children=(
            Collection("files", "vector_store.file", item=("GET", "POST", "DELETE"), actions={"content": ("GET",)}),
            Collection(
                "file_batches",
                "vector_store.files_batch",
                listing=False,
                item=("GET",),
                actions={"cancel": ("POST",), "files": ("GET",)},
            ),
        ),
    ),
    Collection("assistants", "assistant", frozenset({CLASSIC}), item=("GET", "POST", "DELETE")),
    Collection(
        "threads",
        "thread",
        frozenset({CLASSIC}),
        listing=False,
        item=("GET", "POST", "DELETE"),
        children=(
            Collection("messages", "thread.message", item=("GET", "POST", "DELETE")),
            Collection(
                "runs",
                "thread.run",
                item=("GET", "POST"),
                actions={"cancel": ("POST",), "submit_tool_outputs": ("POST",)},
                children=(_STEPS,),
            ),
        ),
    ),
    Collection(
        "containers",
        "container",
        frozenset({V1}),
        children=(Collection("files", "container.file", actions={"content": ("GET",)}),),
    ),
)
_BY_SEGMENT = {c.segment: c for c in COLLECTIONS}
# Kinds whose objects are named by id alone (in paths and bodies): the gateway records where each lives.
TOP_LEVEL_KINDS = frozenset(c.kind for c in COLLECTIONS)
# POST /threads/runs: create a thread and run it in one call.
_CREATE_AND_RUN = ("threads", "runs")

_BAD_PATH = re.compile(r"\.\.|//|[\\%@\r\n\t ]")  # dot segments, empty segments, escapes, whitespace
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_OBJECT_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_DEPLOYMENTS = "/openai/deployments/"
_V1 = "/openai/v1/"
_CLASSIC = "/openai/"
_NOT_FOUND = "Resource not found."


@dataclass(frozen=True)
class Route:
    operation: str  # a model operation ("chat/completions"), else the collections' path ("threads/runs")
    deployment: str | None  # logical deployment from the path; None where the body's model names it
    v1: bool
    method: str = "POST"
    chain: tuple[tuple[str, str | None], ...] = ()  # (kind, id) per level of an object path; id None: collection
    action: str | None = None  # /openai/files/{id}/content: what is done to the object
    segments: tuple[str, ...] = ()  # the validated object path after the surface prefix
    model_operation: bool = False

    @property
    def by_model(self) -> bool:
        """A model operation whose body's `model` names the logical deployment (and is rewritten per host)."""
        return self.model_operation and self.deployment is None

    @property
    def metered(self) -> bool:
        """Inference, counted against a deployment's limits; files, batches, lists and object reads are not."""
        return self.model_operation

    @property
    def kind(self) -> str | None:
        """The kind of stateful object this path addresses or creates, if any."""
        if self.model_operation:
            return "response" if self.operation == "responses" else None
        return self.chain[-1][0] if self.chain else None

    @property
    def object_id(self) -> str | None:
        return self.chain[-1][1] if self.chain and not self.model_operation else None

    @property
    def root(self) -> tuple[str, str] | None:
        """(kind, id) of the top-level object whose resource serves this path (a thread for its runs)."""
        if not self.chain:
            return None
        kind, object_id = self.chain[0]
        return None if object_id is None else (kind, object_id)

    @property
    def creates(self) -> bool:
        """Makes a new object upstream: never sent twice (outcome.py)."""
        if self.model_operation:
            return self.operation == "responses"
        return self.method == "POST" and bool(self.chain) and self.chain[-1][1] is None and self.action is None

    @property
    def lists(self) -> bool:
        """GET of a top-level collection (files, batches, vector stores...): a list spanning every resource."""
        return self.method == "GET" and len(self.chain) == 1 and self.chain[0][1] is None

    @property
    def deletes(self) -> bool:
        return self.method == "DELETE" and self.action is None and len(self.chain) == 1

    def upstream_path(self, physical: str) -> str:
        if self.deployment is not None:
            return f"{_DEPLOYMENTS}{quote(physical, safe='')}/{self.operation}"
        prefix = _V1 if self.v1 else _CLASSIC
        return prefix + (self.operation if self.model_operation else "/".join(self.segments))


def match(method: str, path: str) -> Route:
    """Raise a 404/405 GatewayError for anything that is not a served data-plane operation."""
    if _BAD_PATH.search(path):
        raise GatewayError(404, "NotFound", _NOT_FOUND)
    if path.startswith(_DEPLOYMENTS):
        deployment, _, operation = path[len(_DEPLOYMENTS) :].partition("/")
        if not _NAME.fullmatch(deployment) or operation not in DEPLOYMENT_OPERATIONS:
            raise GatewayError(404, "NotFound", _NOT_FOUND)
        return _model_route(method, operation, deployment, v1=False)
    if path.startswith(_V1):
        rest, v1 = path[len(_V1) :], True
    elif path.startswith(_CLASSIC):
        rest, v1 = path[len(_CLASSIC) :], False
    else:
        raise GatewayError(404, "NotFound", _NOT_FOUND)
    if rest in OPERATIONS and (v1 or rest == "responses"):
        return _model_route(method, rest, None, v1=v1)
    return _object_route(method, rest, v1=v1)


def _model_route(method: str, operation: str, deployment: str | None, *, v1: bool) -> Route:
    if method != "POST":
        raise GatewayError(405, "MethodNotAllowed", f"Method {method} is not allowed on this path; use POST.")
    return Route(operation, deployment, v1, method, model_operation=True)


def _object_route(method: str, rest: str, *, v1: bool) -> Route:
    segments = tuple(rest.split("/"))
    surface = V1 if v1 else CLASSIC
    collection = _BY_SEGMENT.get(segments[0])
    if collection is None or surface not in collection.surfaces:
        raise GatewayError(404, "NotFound", _NOT_FOUND)
    if segments == _CREATE_AND_RUN:
        return _allowed(method, ("POST",), Route("threads/runs", None, v1, method, (("thread", None),), None, segments))
    chain: list[tuple[str, str | None]] = []
    names: list[str] = []
    index = 0
    while True:
        names.append(collection.segment)
        object_id = segments[index + 1] if index + 1 < len(segments) else None
        if object_id is not None and not _OBJECT_ID.fullmatch(object_id):
            raise GatewayError(404, "NotFound", _NOT_FOUND)
        chain.append((collection.kind, object_id))
        after = segments[index + 2 :]
        operation = "/".join(names)
        if object_id is None:
            methods = tuple(m for m, on in (("GET", collection.listing), ("POST", collection.create)) if on)
            return _allowed(method, methods, Route(operation, None, v1, method, tuple(chain), None, segments))
        if not after:
            return _allowed(method, collection.item, Route(operation, None, v1, method, tuple(chain), None, segments))
        child = collection.child(after[0])
        if child is None:
            actions = collection.actions.get(after[0]) if len(after) == 1 else None
            if actions is None:
                raise GatewayError(404, "NotFound", _NOT_FOUND)
            return _allowed(method, actions, Route(operation, None, v1, method, tuple(chain), after[0], segments))
        collection, index = child, index + 2


def _allowed(method: str, methods: tuple[str, ...], route: Route) -> Route:
    if not methods:
        raise GatewayError(404, "NotFound", _NOT_FOUND)
    if method not in methods:
        allowed = " or ".join(methods)
        raise GatewayError(405, "MethodNotAllowed", f"Method {method} is not allowed on this path; use {allowed}.")
    return route


def valid_deployment_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name))


def valid_object_id(value: str) -> bool:
    return bool(_OBJECT_ID.fullmatch(value))


OBJECT_ID_PATTERN = _OBJECT_ID.pattern
_CREDENTIAL_PARAMETERS = frozenset({"api-key", "subscription-key", "access_token", "code", "sig"})


def upstream_query(params: list[tuple[str, str]]) -> str:
    """Re-encode the client's query (api-version and friends) so it cannot smuggle anything; a credential
    placed in the query is the caller's and never goes upstream."""
    if len(params) <= _CACHED_QUERY_PARAMETERS:
        return _encoded(tuple(params))
    return _encode(params)


_CACHED_QUERY_PARAMETERS = 4  # queries this short are re-encoded once (most are `api-version=...`)


@functools.lru_cache(maxsize=256)
def _encoded(params: tuple[tuple[str, str], ...]) -> str:
    return _encode(params)


def _encode(params: Sequence[tuple[str, str]]) -> str:
    kept = [(k, v) for k, v in params if k.lower() not in _CREDENTIAL_PARAMETERS]
    return urlencode(kept) if kept else ""
