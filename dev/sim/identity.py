"""A simulated managed-identity endpoint, App Service protocol, served by the control server.

`ManagedIdentityCredential` (azure.identity) uses it when IDENTITY_ENDPOINT=<control>/_sim/identity/token and
IDENTITY_HEADER=<the secret given as --identity-header> are set: it sends
`GET ...?api-version=2019-08-01&resource=<resource>` with `X-IDENTITY-HEADER: <secret>` and gets
`{"access_token", "expires_on" (epoch seconds, a string), "resource", "token_type": "Bearer"}`; a token lives
`lifetime` real seconds. While `failing`, it answers `status` (default 400: azure-identity raises at once; a
5xx it retries about ten times with exponential backoff, which takes minutes). Regions accept any bearer token.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import web

from dev.sim.errors import AzureError, bad_request
from dev.sim.parse import json_body

Json = dict[str, Any]
API_VERSION = "2019-08-01"


@dataclass
class Identity:
    header: str | None = None  # the secret callers must send; None: every token request is refused
    lifetime: float = 3600.0  # real seconds a token is valid
    failing: bool = False
    status: int = 400  # what a failing endpoint answers
    token_requests: int = 0

    def update(self, change: Json) -> None:
        """A validated partial update: failing (bool), status (400-599), lifetime (real seconds > 0)."""
        checks = {
            "failing": lambda v: isinstance(v, bool),
            "status": lambda v: isinstance(v, int) and not isinstance(v, bool) and 400 <= v <= 599,
            "lifetime": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and v > 0,
        }
        for name, value in change.items():
            if name not in checks or not checks[name](value):
                raise bad_request(f"Invalid identity setting {name!r}: {value!r}; known: {sorted(checks)}")
        for name, value in change.items():
            setattr(self, name, value)

    def token(self, request: web.Request) -> Json:
        self.token_requests += 1
        if self.header is None or request.headers.get("X-IDENTITY-HEADER") != self.header:
            raise AzureError(401, "Unauthorized", "The X-IDENTITY-HEADER header is missing or wrong.")
        if request.query.get("api-version") != API_VERSION:
            raise bad_request(f"api-version must be {API_VERSION}.")
        resource = request.query.get("resource")
        if not resource:
            raise bad_request("The 'resource' query parameter is required.")
        if self.failing:
            raise AzureError(self.status, str(self.status), "The simulated managed identity is failing.")
        return {
            "access_token": f"sim-mi-{uuid.uuid4().hex}",
            "expires_on": str(int(time.time() + self.lifetime)),
            "resource": resource,
            "token_type": "Bearer",
        }

    def state(self) -> Json:
        return {name: value for name, value in asdict(self).items() if name != "header"}


IDENTITY = web.AppKey("identity", Identity)


async def _token(request: web.Request) -> web.StreamResponse:
    return web.json_response(request.app[IDENTITY].token(request))


async def _get(request: web.Request) -> web.StreamResponse:
    return web.json_response(request.app[IDENTITY].state())


async def _post(request: web.Request) -> web.StreamResponse:
    identity = request.app[IDENTITY]
    identity.update(await json_body(request))
    return web.json_response(identity.state())


def mount(app: web.Application, identity: Identity) -> None:
    app[IDENTITY] = identity
    app.router.add_get("/_sim/identity/token", _token)
    app.router.add_get("/_sim/identity", _get)
    app.router.add_post("/_sim/identity", _post)
