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
# v1 collections whose objects can be read or deleted by id: /openai/v1/{collection}/{id}.
OBJECT_COLLECTIONS = frozenset({"responses"})
OBJECT_METHODS = ("GET", "DELETE")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_OBJECT_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_DEPLOYMENTS = "/openai/deployments/"
_V1 = "/openai/v1/"


@dataclass(frozen=True)
class Route:
    operation: str  # e.g. "chat/completions"
    deployment: str | None  # logical deployment from the path; None on v1, where the body's model names it
    v1: bool
    object_id: str | None = None  # /openai/v1/responses/{id}: the object the request reads or deletes
    method: str = "POST"

    def upstream_path(self, physical: str) -> str:
        if self.object_id is not None:
            return f"{_V1}{self.operation}/{self.object_id}"
        if self.v1:
            return _V1 + self.operation
        return f"{_DEPLOYMENTS}{quote(physical, safe='')}/{self.operation}"


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
        return _object_route(method, path[len(_V1) :])
    else:
        raise GatewayError(404, "NotFound", "Resource not found.")
    if method != "POST":
        raise GatewayError(405, "MethodNotAllowed", f"Method {method} is not allowed on this path; use POST.")
    return route


def _object_route(method: str, rest: str) -> Route:
    collection, _, object_id = rest.partition("/")
    if collection not in OBJECT_COLLECTIONS or not _OBJECT_ID.fullmatch(object_id):
        raise GatewayError(404, "NotFound", "Resource not found.")
    if method not in OBJECT_METHODS:
        raise GatewayError(405, "MethodNotAllowed", f"Method {method} is not allowed on this path; use GET or DELETE.")
    return Route(collection, None, v1=True, object_id=object_id, method=method)


def valid_deployment_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name))


_CREDENTIAL_PARAMETERS = frozenset({"api-key", "subscription-key", "access_token", "code", "sig"})


def upstream_query(params: list[tuple[str, str]]) -> str:
    """Re-encode the client's query (api-version and friends) so it cannot smuggle anything; a credential
    placed in the query is the caller's and never goes upstream."""
    kept = [(k, v) for k, v in params if k.lower() not in _CREDENTIAL_PARAMETERS]
    return urlencode(kept) if kept else ""
