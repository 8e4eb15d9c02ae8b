"""Who is calling: a gateway key in `api-key` (what the SDKs send for `api_key`) or an Entra ID bearer token.

Keys are kept only as SHA-256 digests and compared in constant time against every valid key, so
neither timing nor a memory dump gives one away. The caller's credential is never forwarded.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from shared.config import Client
from shared.entra import AuthError, EntraValidator
from shared.errors import GatewayError
from shared.keys import KeyRing, digest


@dataclass(frozen=True)
class Caller:
    name: str  # the client: whose limits apply, and the name in usage records and logs
    kind: str  # "key" | "entra"
    owner: str = ""  # whose objects it reaches: the client; an Entra application under the default client: itself
    client: Client | None = None  # its policy (limits, priority, admin); None only in tests of auth itself

    @property
    def admin(self) -> bool:
        return self.client is not None and self.client.admin


class BearerValidator(Protocol):
    async def validate(self, authorization_header: str) -> Caller: ...


class EntraBearer:
    """Adapts the Entra ID token validator to the gateway's callers and OpenAI-shaped errors.

    A token's application (azp / appid) acts as the client that lists it in `entra_app_ids`; an
    application no client lists acts as the default client (owning its own objects) or is refused.
    """

    def __init__(self, validator: EntraValidator, clients: Sequence[Client], default_client: str | None) -> None:
        self._validator = validator
        self._by_app = {app_id: client for client in clients for app_id in client.entra_app_ids}
        self._default = next((c for c in clients if c.name == default_client), None)

    async def validate(self, authorization_header: str) -> Caller:
        try:
            principal = await self._validator.validate(authorization_header)
        except AuthError as exc:
            raise GatewayError(exc.status, str(exc.status), exc.message) from None
        client = self._by_app.get(principal.app_id.lower())
        if client is not None:
            return Caller(client.name, "entra", client.name, client)
        if self._default is not None:
            return Caller(self._default.name, "entra", f"entra:{principal.app_id}", self._default)
        raise GatewayError(
            403,
            "403",
            f"The application {principal.app_id} is not a client of this gateway "
            "(no client lists it in entra_app_ids).",
        )


class Authenticator:
    def __init__(self, clients: Sequence[Client], bearer: BearerValidator | None = None) -> None:
        self.keys = KeyRing(clients)
        self._clients = {client.name: client for client in clients}
        self._bearer = bearer

    async def authenticate(self, headers: Mapping[str, str]) -> Caller:
        key = headers.get("api-key")
        if key:
            return self._by_key(key)
        authorization = headers.get("authorization")
        if authorization:
            scheme, _, credential = authorization.partition(" ")
            credential = credential.strip()
            # The SDKs' v1 clients (OpenAI(base_url=...)) send the key as a bearer token; JWTs have two dots.
            if scheme.lower() == "bearer" and credential and credential.count(".") != 2:
                return self._by_key(credential)
            if self._bearer is not None:
                return await self._bearer.validate(authorization)
        raise GatewayError(
            401,
            "401",
            "Access denied due to missing credentials. Send a gateway key in the 'api-key' header"
            + (" or an Entra ID bearer token." if self._bearer is not None else "."),
        )

    def _by_key(self, key: str) -> Caller:
        presented = digest(key)
        found: str | None = None
        for name, valid in self.keys.entries():  # no early exit: the time taken does not depend on which key matched
            if hmac.compare_digest(presented, valid) and found is None:
                found = name
        if found is None:
            raise GatewayError(401, "401", "Access denied due to invalid gateway key.")
        return Caller(found, "key", found, self._clients.get(found))
