"""Outbound identity: one process-wide Entra ID token for every region (the seed solution's idea).

The credential is the seed's service principal, whose client secret is read from Key Vault with the
Function's managed identity; or the managed identity itself; or DefaultAzureCredential (developer
sign-in). A static token exists only for local simulators, which cannot verify Entra tokens.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from azure.core.credentials import AccessToken
from azure.core.credentials_async import AsyncTokenCredential

from shared.config import CredentialSettings

SCOPE = "https://cognitiveservices.azure.com/.default"
# Refresh this long before expiry, so no request ever carries a token about to lapse.
REFRESH_MARGIN_SECONDS = 300.0


class TokenProvider(Protocol):
    async def token(self) -> str: ...
    async def close(self) -> None: ...


class CredentialError(Exception):
    """The gateway could not obtain an upstream token; the message is safe to log."""


class BearerTokenProvider:
    """Caches the token and refreshes it once (not once per waiting request) shortly before expiry."""

    def __init__(
        self,
        credential: AsyncTokenCredential,
        *,
        scope: str = SCOPE,
        wall_time: Callable[[], float] = time.time,
        closers: tuple[Any, ...] = (),
    ) -> None:
        self._credential = credential
        self._scope = scope
        self._wall_time = wall_time
        self._token: AccessToken | None = None
        self._lock = asyncio.Lock()
        self._closers = closers

    async def token(self) -> str:
        if self._fresh():
            assert self._token is not None
            return self._token.token
        async with self._lock:
            if not self._fresh():
                try:
                    self._token = await self._credential.get_token(self._scope)
                except Exception as exc:  # noqa: BLE001 - many types; none may leak
                    raise CredentialError(
                        f"could not get an Entra ID token for {self._scope}: {type(exc).__name__}"
                    ) from None
            assert self._token is not None
            return self._token.token

    def _fresh(self) -> bool:
        return self._token is not None and self._token.expires_on - REFRESH_MARGIN_SECONDS > self._wall_time()

    async def close(self) -> None:
        await self._credential.close()
        for closer in self._closers:
            await closer.close()


class StaticCredential:
    """A fixed token, for local simulated regions only (they accept any bearer token)."""

    def __init__(self, token: str, wall_time: Callable[[], float] = time.time) -> None:
        self._token = token
        self._wall_time = wall_time

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self._token, int(self._wall_time()) + 3600)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> StaticCredential:
        return self

    async def __aexit__(self, *args: object) -> None:
        return None


SecretReader = Callable[[AsyncTokenCredential, CredentialSettings], Awaitable[str]]


async def build_token_provider(
    settings: CredentialSettings, *, read_secret: SecretReader | None = None
) -> TokenProvider:
    """The composition root calls this once per process; `read_secret` is Key Vault unless a test swaps it."""
    from azure.identity.aio import ClientSecretCredential, DefaultAzureCredential, ManagedIdentityCredential

    if settings.mode == "static":
        assert settings.static_token is not None
        return BearerTokenProvider(StaticCredential(settings.static_token.reveal()))
    if settings.mode == "managed-identity":
        return BearerTokenProvider(ManagedIdentityCredential(client_id=settings.managed_identity_client_id))
    if settings.mode == "spn":
        vault_identity = ManagedIdentityCredential(client_id=settings.managed_identity_client_id)
        try:
            secret = await (read_secret or read_key_vault_secret)(vault_identity, settings)
        except BaseException:
            await vault_identity.close()
            raise
        assert settings.spn_tenant_id and settings.spn_client_id
        spn = ClientSecretCredential(settings.spn_tenant_id, settings.spn_client_id, secret)
        return BearerTokenProvider(spn, closers=(vault_identity,))
    return BearerTokenProvider(DefaultAzureCredential(managed_identity_client_id=settings.managed_identity_client_id))


async def read_key_vault_secret(identity: AsyncTokenCredential, settings: CredentialSettings) -> str:
    """The SPN's client secret, by name, from the gateway's Key Vault (the seed's flow)."""
    from azure.keyvault.secrets.aio import SecretClient

    assert settings.keyvault_uri and settings.spn_secret_name
    async with SecretClient(vault_url=settings.keyvault_uri, credential=identity) as client:
        try:
            secret = await client.get_secret(settings.spn_secret_name)
        except Exception as exc:  # noqa: BLE001 - azure-core raises many types; the message must stay safe
            raise CredentialError(
                f"could not read secret {settings.spn_secret_name!r} from {settings.keyvault_uri}: "
                f"{type(exc).__name__} (missing secret, or the identity lacks 'Key Vault Secrets User')"
            ) from None
    if not secret.value:
        raise CredentialError(f"secret {settings.spn_secret_name!r} in {settings.keyvault_uri} is empty")
    return secret.value
