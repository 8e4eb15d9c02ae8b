"""Table Storage clients: a connection string locally, endpoint + identity in Azure, never a shared key there."""

from __future__ import annotations

import pytest
from azure.core.credentials import AccessToken

from shared.config import Secret, TableSettings
from shared.storage import safe_key, table_client

AZURITE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
)


class FakeIdentity:
    async def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        return AccessToken("token", 0)

    async def close(self) -> None:
        return None


async def test_a_connection_string_is_used_locally() -> None:
    client = table_client(TableSettings(connection_string=Secret(AZURITE)), "gatewayusage", None)
    assert client.url.startswith("http://127.0.0.1:10002/devstoreaccount1")
    assert client.table_name == "gatewayusage"
    await client.close()


async def test_in_azure_the_endpoint_and_the_managed_identity_are_used() -> None:
    identity = FakeIdentity()
    settings = TableSettings(endpoint="https://stgw.table.core.windows.net")
    client = table_client(settings, "gatewayhealth", identity)  # type: ignore[arg-type]
    assert client.url.startswith("https://stgw.table.core.windows.net")
    assert client.credential is identity  # a token credential: no account key anywhere
    await client.close()


def test_an_endpoint_without_an_identity_is_refused() -> None:
    with pytest.raises(ValueError, match="credential"):
        table_client(TableSettings(endpoint="https://stgw.table.core.windows.net"), "gatewayusage", None)


def test_keys_lose_the_characters_table_storage_forbids() -> None:
    assert safe_key("eastus/gpt-4o#1?x\\y\x07") == "eastus|gpt-4o|1|x|y|"
