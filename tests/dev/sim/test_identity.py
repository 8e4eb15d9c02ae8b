"""The simulated managed-identity endpoint, proven with the real azure.identity.aio.ManagedIdentityCredential."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from azure.core.exceptions import ClientAuthenticationError
from azure.identity.aio import ManagedIdentityCredential

from dev.simulator import Identity, start_control
from tests.dev.sim.conftest import get, post

SECRET = "identity-secret"
SCOPE = "https://cognitiveservices.azure.com/.default"


@pytest_asyncio.fixture
async def control(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    """A control server with the identity endpoint, and this process's environment pointing at it."""
    runner, url = await start_control([], identity_endpoint=Identity(SECRET, lifetime=120))
    for name in ("IDENTITY_SERVER_THUMBPRINT", "MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT", "AZURE_CLIENT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IDENTITY_ENDPOINT", url + "/_sim/identity/token")
    monkeypatch.setenv("IDENTITY_HEADER", SECRET)
    yield url
    await runner.cleanup()


async def token_of(credential: ManagedIdentityCredential) -> tuple[str, int]:
    async with credential:
        token = await credential.get_token(SCOPE)
    return token.token, token.expires_on


@pytest.mark.asyncio
async def test_managed_identity_credential_gets_a_token_and_raises_while_failing(
    control: str, session: aiohttp.ClientSession
) -> None:
    token, expires_on = await token_of(ManagedIdentityCredential())
    assert token.startswith("sim-mi-")
    assert abs(expires_on - (time.time() + 120)) < 5
    status, _, state = await post(session, control + "/_sim/identity", {"failing": True}, {})
    assert (status, state["failing"], state["token_requests"]) == (200, True, 1)
    with pytest.raises(ClientAuthenticationError):  # a fresh credential: nothing cached
        await token_of(ManagedIdentityCredential())
    await post(session, control + "/_sim/identity", {"failing": False}, {})
    assert (await token_of(ManagedIdentityCredential()))[0] != token
    assert (await get(session, control + "/_sim/identity", {}))[2]["token_requests"] == 3


@pytest.mark.asyncio
async def test_the_endpoint_checks_the_secret_and_the_protocol(
    control: str, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_url = f"{control}/_sim/identity/token?api-version=2019-08-01&resource=https://cognitiveservices.azure.com"
    status, _, token = await get(session, token_url, {"X-IDENTITY-HEADER": SECRET})
    assert status == 200 and token["resource"] == "https://cognitiveservices.azure.com"
    assert token["token_type"] == "Bearer" and token["expires_on"].isdigit()
    assert (await get(session, token_url, {"X-IDENTITY-HEADER": "wrong"}))[0] == 401
    assert (await get(session, token_url.replace("2019-08-01", "2017-09-01"), {"X-IDENTITY-HEADER": SECRET}))[0] == 400
    for bad in ({"failing": "yes"}, {"status": 200}, {"lifetime": 0}, {"unknown": 1}):
        assert (await post(session, control + "/_sim/identity", bad, {}))[0] == 400
    monkeypatch.setenv("IDENTITY_HEADER", "wrong")
    with pytest.raises(ClientAuthenticationError):
        await token_of(ManagedIdentityCredential())
