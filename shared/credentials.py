"""Outbound identity: one process-wide Entra ID token for every region (the seed solution's idea).

The credential is the seed's service principal, whose client secret is read from Key Vault with the
Function's managed identity; or the managed identity itself; or DefaultAzureCredential (developer
sign-in). A static token exists only for local simulators, which cannot verify Entra tokens.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from azure.core.credentials import AccessToken
from azure.core.credentials_async import AsyncTokenCredential

from shared.config import CredentialSettings

SCOPE = "https://cognitiveservices.azure.com/.default"
# Refresh this long before expiry (or at half the token's life, if that is sooner), in the background.
REFRESH_MARGIN_SECONDS = 300.0
# After a failed fetch, callers without a valid token fail at once for this long instead of queueing on
# the identity endpoint; the next caller after it tries again.
FAILURE_HOLD_SECONDS = 0.5


class TokenProvider(Protocol):
    async def token(self) -> str: ...
    async def close(self) -> None: ...


class CredentialError(Exception):
    """The gateway could not obtain an upstream token; the message is safe to log."""


class BearerTokenProvider:
    """One cached token for every request; refreshed once, ahead of expiry, without making requests wait.

    While the token is still valid a failed refresh changes nothing (it is retried); only when no valid
    token is left do requests fail, and then fast: a failure is remembered for FAILURE_HOLD_SECONDS.
    """

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
        self._refresh_at = 0.0  # wall time from which the token is refreshed in the background
        self._fetch: asyncio.Task[AccessToken] | None = None
        self._failure: CredentialError | None = None
        self._failed_at = -math.inf
        self._closers = closers

    async def token(self) -> str:
        now = self._wall_time()
        token = self._token
        if token is not None and token.expires_on > now:
            if now >= self._refresh_at and now - self._failed_at >= FAILURE_HOLD_SECONDS:
                self._start_fetch()  # ahead of expiry: this request still goes with the current token
            return token.token
        if self._failure is not None and now - self._failed_at < FAILURE_HOLD_SECONDS:
            raise self._failure
        # Shielded: one caller going away must not abort the fetch the others are waiting for.
        return (await asyncio.shield(self._start_fetch())).token

    def _start_fetch(self) -> asyncio.Task[AccessToken]:
        if self._fetch is None:
            self._fetch = asyncio.create_task(self._get())
            # A background refresh may fail with nobody awaiting it: the failure is kept in _failure.
            self._fetch.add_done_callback(lambda task: task.cancelled() or task.exception())
        return self._fetch

    async def _get(self) -> AccessToken:
        try:
            token = await self._credential.get_token(self._scope)
        except Exception as exc:  # noqa: BLE001 - many types; none may leak
            self._failure = CredentialError(f"could not get an Entra ID token for {self._scope}: {type(exc).__name__}")
            self._failed_at = self._wall_time()
            raise self._failure from None
        finally:
            self._fetch = None
        issued = self._wall_time()
        self._token, self._failure = token, None
        self._refresh_at = token.expires_on - min(REFRESH_MARGIN_SECONDS, (token.expires_on - issued) / 2)
        return token

    async def close(self) -> None:
        if self._fetch is not None:
            self._fetch.cancel()
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
