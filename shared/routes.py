"""The Azure OpenAI data-plane paths the gateway serves, parsed into what routing needs.

Only whitelisted operations are forwarded, and the upstream path is rebuilt from validated parts,
so nothing in a client's path can change which host or which path upstream receives.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
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
# Operations of the /openai/deployments/{name}/... surface (Responses only exists on v1).
DEPLOYMENT_OPERATIONS = OPERATIONS - {"responses"}
# Stateful objects: (collection, addressed by id, action after the id) -> the methods served there.
# Responses are created by the "responses" operation above; files and batches by POST to their collection.
_OBJECT_PATHS: dict[tuple[str, bool, str | None], tuple[str, ...]] = {
    ("responses", True, None): ("GET", "DELETE"),
    ("files", False, None): ("GET", "POST"),
    ("files", True, None): ("GET", "DELETE"),
    ("files", True, "content"): ("GET",),
    ("batches", False, None): ("GET", "POST"),
    ("batches", True, None): ("GET",),
    ("batches", True, "cancel"): ("POST",),
}
# The affinity kind of each collection's objects (see shared/affinity.py).
OBJECT_KINDS = {"responses": "response", "files": "file", "batches": "batch"}
# Files and batches also live on the classic surface (/openai/files?api-version=...); Responses only on v1.
_CLASSIC_COLLECTIONS = frozenset({"files", "batches"})
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_OBJECT_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_DEPLOYMENTS = "/openai/deployments/"
_V1 = "/openai/v1/"
_CLASSIC = "/openai/"


@dataclass(frozen=True)
class Route:
    operation: str  # e.g. "chat/completions"
    deployment: str | None  # logical deployment from the path; None on v1, where the body's model names it
    v1: bool
    object_id: str | None = None  # /openai/v1/responses/{id}: the object the request reads or deletes
    method: str = "POST"
    action: str | None = None  # /openai/files/{id}/content: what is done to the object

    @property
    def by_model(self) -> bool:
        """A v1 model operation: the body's `model` names the logical deployment (and is rewritten per host)."""
        return self.v1 and self.object_id is None and self.operation in OPERATIONS

    @property
    def metered(self) -> bool:
        """Inference, counted against a deployment's limits; files, batches, lists and object reads are not."""
        return self.deployment is not None or self.by_model

    @property
    def kind(self) -> str | None:
        """The kind of stateful object this path addresses or creates, if any."""
        return OBJECT_KINDS.get(self.operation)

    @property
    def creates(self) -> bool:
        return self.kind is not None and self.method == "POST" and self.object_id is None

    @property
    def lists(self) -> bool:
        """GET /files, GET /batches: a list spanning every resource."""
        return self.kind is not None and self.method == "GET" and self.object_id is None

    def upstream_path(self, physical: str) -> str:
        if self.deployment is not None:
            return f"{_DEPLOYMENTS}{quote(physical, safe='')}/{self.operation}"
        parts = [self.operation, self.object_id, self.action]
        return (_V1 if self.v1 else _CLASSIC) + "/".join(p for p in parts if p is not None)


def match(method: str, path: str) -> Route:
    """Raise a 404/405 GatewayError for anything that is not a served data-plane operation."""
    if any(bad in path for bad in ("..", "//", "\\", "%", "@", "\r", "\n", "\t", " ")):
        raise GatewayError(404, "NotFound", "Resource not found.")
    if path.startswith(_DEPLOYMENTS):
        deployment, _, operation = path[len(_DEPLOYMENTS) :].partition("/")
        if not _NAME.fullmatch(deployment) or operation not in DEPLOYMENT_OPERATIONS:
            raise GatewayError(404, "NotFound", "Resource not found.")
        route = Route(operation, deployment, v1=False)
    elif path.startswith(_V1) and path[len(_V1) :] in OPERATIONS:
        route = Route(path[len(_V1) :], None, v1=True)
    elif path.startswith(_V1):
        return _object_route(method, path[len(_V1) :], v1=True)
    elif path.startswith(_CLASSIC):
        return _object_route(method, path[len(_CLASSIC) :], v1=False)
    else:
        raise GatewayError(404, "NotFound", "Resource not found.")
    if method != "POST":
        raise GatewayError(405, "MethodNotAllowed", f"Method {method} is not allowed on this path; use POST.")
    return route


def _object_route(method: str, rest: str, *, v1: bool) -> Route:
    collection, *more = rest.split("/")
    object_id = more[0] if more else None
    action = more[1] if len(more) > 1 else None
    methods = _OBJECT_PATHS.get((collection, object_id is not None, action)) if len(more) <= 2 else None
    if (
        methods is None
        or (not v1 and collection not in _CLASSIC_COLLECTIONS)
        or (object_id is not None and not _OBJECT_ID.fullmatch(object_id))
    ):
        raise GatewayError(404, "NotFound", "Resource not found.")
    if method not in methods:
        allowed = " or ".join(methods)
        raise GatewayError(405, "MethodNotAllowed", f"Method {method} is not allowed on this path; use {allowed}.")
    return Route(collection, None, v1=v1, object_id=object_id, method=method, action=action)


def valid_deployment_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name))


_CREDENTIAL_PARAMETERS = frozenset({"api-key", "subscription-key", "access_token", "code", "sig"})


def upstream_query(params: list[tuple[str, str]]) -> str:
    """Re-encode the client's query (api-version and friends) so it cannot smuggle anything; a credential
    placed in the query is the caller's and never goes upstream."""
    kept = [(k, v) for k, v in params if k.lower() not in _CREDENTIAL_PARAMETERS]
    return urlencode(kept) if kept else ""
