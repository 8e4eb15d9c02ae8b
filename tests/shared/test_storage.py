"""Table Storage clients: a connection string locally, endpoint + identity in Azure, never a shared key there."""

from __future__ import annotations

import pytest
from azure.core.credentials import AccessToken
from azure.data.tables import EdmType

from shared.config import Secret, TableSettings
from shared.storage import as_int, int64, quote_key, safe_key, shard, table_client

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


def test_quoted_key_parts_never_collide_and_hold_no_forbidden_character() -> None:
    names = ["a/b", "a|b", "a%2Fb", "a#b", "a?b", "a\\b", "a\x07b", "ä b"]
    quoted = [quote_key(name) for name in names]
    assert len(set(quoted)) == len(names)
    assert not any(ch in q for q in quoted for ch in "/\\#?|" + "".join(map(chr, range(32))))


def test_counts_past_int32_are_typed_int64_and_read_back() -> None:
    prop = int64(3_000_000_000)
    assert prop.edm_type == EdmType.INT64 and as_int(prop) == 3_000_000_000 and as_int(7) == 7


def test_shards_are_stable_and_spread() -> None:
    assert shard("web-1.abc", 16) == shard("web-1.abc", 16)  # the same in every process (hash() is not)
    assert len({shard(f"instance-{i}", 16) for i in range(200)}) == 16
