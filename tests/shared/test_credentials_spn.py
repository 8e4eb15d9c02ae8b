"""The seed's flow: the SPN's client secret is read from Key Vault with the managed identity, then used.

No network here: the Key Vault client and the Entra credentials are replaced at the module they are
imported from, and every fake records what it was built with, so the wiring itself is what is tested.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import azure.identity.aio
import azure.keyvault.secrets.aio
import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from starlette.requests import Request

from shared import gateway as gateway_module
from shared.config import CredentialSettings, load_settings
from shared.credentials import SCOPE, BearerTokenProvider, CredentialError, build_token_provider

VAULT = "https://kv-gateway.vault.azure.net/"
SECRET_NAME = "gateway-spn-secret"
SECRET_VALUE = "spn-s3cr3t~Value.0123456789"
TENANT = "11111111-2222-3333-4444-555555555555"
CLIENT = "66666666-7777-8888-9999-000000000000"
MI_CLIENT = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"

SETTINGS = CredentialSettings(
    mode="spn",
    managed_identity_client_id=MI_CLIENT,
    keyvault_uri=VAULT,
    spn_tenant_id=TENANT,
    spn_client_id=CLIENT,
    spn_secret_name=SECRET_NAME,
)


class FakeManagedIdentity:
    built: list[FakeManagedIdentity] = []

    def __init__(self, *, client_id: str | None = None, **kwargs: Any) -> None:
        self.client_id = client_id
        self.closed = False
        FakeManagedIdentity.built.append(self)

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        raise AssertionError("the managed identity only opens the vault; it must not sign in upstream")

    async def close(self) -> None:
        self.closed = True


class RealClientSecretCredential(azure.identity.aio.ClientSecretCredential):
    """The real azure-identity class (so its own argument checks run), without a network round trip."""

    built: list[RealClientSecretCredential] = []

    def __init__(self, tenant_id: str, client_id: str, client_secret: str, **kwargs: Any) -> None:
        super().__init__(tenant_id, client_id, client_secret, **kwargs)
        self.args = (tenant_id, client_id, client_secret)
        self.scopes: list[tuple[str, ...]] = []
        self.closed = False
        RealClientSecretCredential.built.append(self)

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(f"entra-token-for-{self.args[0]}", 4_102_444_800)

    async def close(self) -> None:
        self.closed = True
        await super().close()


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeManagedIdentity.built = []
    RealClientSecretCredential.built = []
    monkeypatch.setattr(azure.identity.aio, "ManagedIdentityCredential", FakeManagedIdentity)
    monkeypatch.setattr(azure.identity.aio, "ClientSecretCredential", RealClientSecretCredential)

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("DefaultAzureCredential must not be used in spn mode")

    monkeypatch.setattr(azure.identity.aio, "DefaultAzureCredential", forbidden)


async def test_spn_secret_is_read_from_the_configured_vault_then_signs_in_to_the_configured_tenant() -> None:
    reads: list[tuple[Any, CredentialSettings]] = []

    async def read_secret(identity: Any, settings: CredentialSettings) -> str:
        reads.append((identity, settings))
        return SECRET_VALUE

    provider = await build_token_provider(SETTINGS, read_secret=read_secret)

    [(identity, settings)] = reads
    assert settings.keyvault_uri == VAULT and settings.spn_secret_name == SECRET_NAME
    [vault_identity] = FakeManagedIdentity.built
    assert identity is vault_identity
    assert vault_identity.client_id == MI_CLIENT  # the Function's user-assigned identity opens the vault
    [spn] = RealClientSecretCredential.built
    assert spn.args == (TENANT, CLIENT, SECRET_VALUE)
    assert isinstance(provider, BearerTokenProvider)

    assert await provider.token() == f"entra-token-for-{TENANT}"
    assert await provider.token() == f"entra-token-for-{TENANT}"  # cached
    assert spn.scopes == [(SCOPE,)]
    assert SCOPE == "https://cognitiveservices.azure.com/.default"

    await provider.close()
    assert spn.closed and vault_identity.closed


GATEWAY_ENV = {
    "GATEWAY_CONFIG": '{"deployments": {"gpt-4o": [{"name": "eastus", "endpoint": "https://e.example",'
    ' "deployment": "gpt-4o", "tpm": 1000}]}, "clients": [{"name": "a", "key_setting": "K"}]}',
    "K": "client-key",
    "GATEWAY_CREDENTIAL": "spn",
    "GATEWAY_KEYVAULT_URI": VAULT,
    "GATEWAY_SPN_TENANT_ID": TENANT,
    "GATEWAY_SPN_CLIENT_ID": CLIENT,
    "GATEWAY_SPN_SECRET_NAME": SECRET_NAME,
}


async def test_spn_settings_from_app_settings_reach_the_reader() -> None:
    env = {**GATEWAY_ENV, "AZURE_CLIENT_ID": MI_CLIENT}
    seen: list[CredentialSettings] = []

    async def read_secret(identity: Any, settings: CredentialSettings) -> str:
        seen.append(settings)
        return SECRET_VALUE

    settings = load_settings(env).credential
    assert settings == SETTINGS
    provider = await build_token_provider(settings, read_secret=read_secret)
    assert seen == [SETTINGS]
    assert RealClientSecretCredential.built[0].args == (TENANT, CLIENT, SECRET_VALUE)
    await provider.close()


async def test_a_reader_failure_propagates_as_is() -> None:
    async def read_secret(identity: Any, settings: CredentialSettings) -> str:
        raise CredentialError(f"could not read secret {settings.spn_secret_name!r}")

    with pytest.raises(CredentialError, match=SECRET_NAME):
        await build_token_provider(SETTINGS, read_secret=read_secret)
    assert RealClientSecretCredential.built == []  # nothing signs in with a secret it does not have


# --- the real reader (read_key_vault_secret), against a fake SecretClient ------------------------------------------


class FakeSecretClient:
    """azure.keyvault.secrets.aio.SecretClient's surface used by the reader."""

    behaviour: Any = None
    opened: list[tuple[str, Any]] = []
    asked: list[str] = []

    def __init__(self, vault_url: str, credential: Any, **kwargs: Any) -> None:
        FakeSecretClient.opened.append((vault_url, credential))

    async def __aenter__(self) -> FakeSecretClient:
        return self

    async def __aexit__(self, *args: object) -> None:
        return None

    async def get_secret(self, name: str, **kwargs: Any) -> Any:
        FakeSecretClient.asked.append(name)
        behaviour = FakeSecretClient.behaviour
        if isinstance(behaviour, BaseException):
            raise behaviour
        return type("KeyVaultSecret", (), {"value": behaviour, "name": name})()


@pytest.fixture
def vault(monkeypatch: pytest.MonkeyPatch) -> type[FakeSecretClient]:
    FakeSecretClient.opened, FakeSecretClient.asked, FakeSecretClient.behaviour = [], [], SECRET_VALUE
    monkeypatch.setattr(azure.keyvault.secrets.aio, "SecretClient", FakeSecretClient)
    return FakeSecretClient


async def test_the_default_reader_asks_the_configured_vault_for_the_configured_secret(
    vault: type[FakeSecretClient],
) -> None:
    provider = await build_token_provider(SETTINGS)  # no read_secret: Key Vault
    [(url, identity)] = vault.opened
    assert url == VAULT
    assert identity is FakeManagedIdentity.built[0]
    assert vault.asked == [SECRET_NAME]
    assert RealClientSecretCredential.built[0].args == (TENANT, CLIENT, SECRET_VALUE)
    await provider.close()


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (ResourceNotFoundError(f"SecretNotFound: {SECRET_NAME} (was {SECRET_VALUE})"), "ResourceNotFoundError"),
        (
            HttpResponseError(f"Forbidden: caller lacks secrets/get; last value {SECRET_VALUE}"),
            "HttpResponseError",
        ),
        (
            ClientAuthenticationError(f"ManagedIdentityCredential unavailable {SECRET_VALUE}"),
            "ClientAuthenticationError",
        ),
        (OSError(f"connect failed {SECRET_VALUE}"), "OSError"),
    ],
    ids=["not-found", "forbidden", "no-identity", "network"],
)
async def test_a_vault_failure_names_the_secret_and_the_likely_cause_but_never_the_value(
    vault: type[FakeSecretClient], error: Exception, kind: str
) -> None:
    vault.behaviour = error
    with pytest.raises(CredentialError) as info:
        await build_token_provider(SETTINGS)
    message = str(info.value)
    assert SECRET_NAME in message and VAULT in message
    assert "Key Vault Secrets User" in message  # the likely cause, in words an operator can act on
    assert kind in message
    assert SECRET_VALUE not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__  # the original is not in tracebacks
    assert RealClientSecretCredential.built == []


async def test_an_empty_secret_is_refused_by_name(vault: type[FakeSecretClient]) -> None:
    vault.behaviour = ""
    with pytest.raises(CredentialError, match=f"{SECRET_NAME}.*empty"):
        await build_token_provider(SETTINGS)
    assert RealClientSecretCredential.built == []


async def test_a_failed_read_closes_the_vault_identity(vault: type[FakeSecretClient]) -> None:
    """The managed identity opened for the vault holds an HTTP transport; a failed start must not leak it."""
    vault.behaviour = HttpResponseError("Forbidden")
    with pytest.raises(CredentialError):
        await build_token_provider(SETTINGS)
    [vault_identity] = FakeManagedIdentity.built
    assert vault_identity.closed


# --- the composition root while the vault cannot be read --------------------------------------------------------


def starlette_request(path: str, method: str = "POST", body: bytes = b"") -> Request:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"api-version=2024-10-21",
        "headers": [(b"api-key", b"client-key"), (b"content-type", b"application/json")],
    }
    return Request(scope, receive)


async def test_gateway_answers_503_in_openai_shape_while_the_vault_is_unreadable_and_leaks_nothing(
    vault: type[FakeSecretClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions: list[aiohttp.ClientSession] = []
    real_session = aiohttp.ClientSession

    def counting_session(*args: Any, **kwargs: Any) -> aiohttp.ClientSession:
        session = real_session(*args, **kwargs)
        sessions.append(session)
        return session

    monkeypatch.setattr(aiohttp, "ClientSession", counting_session)
    vault.behaviour = HttpResponseError("Forbidden")
    gateway = gateway_module.Gateway(load_settings(GATEWAY_ENV))
    try:
        for _ in range(3):
            response = await gateway.handle(
                starlette_request("/openai/deployments/gpt-4o/chat/completions", body=b'{"max_tokens": 1}')
            )
            assert response.status_code == 503
            error = json.loads(bytes(response.body))["error"]
            assert set(error) == {"code", "message", "type"}
            assert SECRET_VALUE not in json.dumps(error)
        # What was opened for the failed starts is closed again: at most the one live session remains.
        assert sum(not s.closed for s in sessions) <= 1
        assert all(identity.closed for identity in FakeManagedIdentity.built)

        vault.behaviour = SECRET_VALUE  # the role assignment arrived: the next request starts the gateway
        status = await gateway.status(starlette_request("/status", method="GET"))
        assert status.status_code == 200
        assert RealClientSecretCredential.built[-1].args == (TENANT, CLIENT, SECRET_VALUE)
    finally:
        await gateway.close()
        for session in sessions:
            await session.close()
