"""Authenticator: gateway keys (rotation, constant-time lookup) and delegated bearer tokens."""

from __future__ import annotations

import pytest

from shared.auth import Authenticator, Caller, EntraBearer
from shared.config import Client, Secret
from shared.entra import Principal
from shared.errors import GatewayError

CLIENTS = [
    Client("app-a", (Secret("key-a-current"), Secret("key-a-next"))),
    Client("app-b", (Secret("key-b"),)),
]


class FakeBearer:
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def validate(self, authorization_header: str) -> Caller:
        self.seen.append(authorization_header)
        return Caller("entra-app", "entra")


async def rejected(auth: Authenticator, headers: dict[str, str]) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        await auth.authenticate(headers)
    assert info.value.status == 401
    return info.value


@pytest.mark.parametrize(("key", "name"), [("key-a-current", "app-a"), ("key-a-next", "app-a"), ("key-b", "app-b")])
async def test_every_configured_key_identifies_its_client(key: str, name: str) -> None:
    caller = await Authenticator(CLIENTS).authenticate({"api-key": key})
    client = next(c for c in CLIENTS if c.name == name)
    assert caller == Caller(name, "key", name, client)  # it owns what it creates, under its own policy


@pytest.mark.parametrize("key", ["key-a", "key-a-current ", "KEY-B", "wrong-but-long-" * 10])
async def test_a_wrong_key_is_401_and_never_echoed(key: str) -> None:
    error = await rejected(Authenticator(CLIENTS, FakeBearer()), {"api-key": key})
    assert key.encode() not in error.body()
    assert key not in str(error)
    assert key not in str(error.headers())


async def test_no_credential_is_401() -> None:
    error = await rejected(Authenticator(CLIENTS), {})
    assert b"api-key" in error.body()
    await rejected(Authenticator(CLIENTS), {"api-key": ""})


async def test_a_bearer_token_is_delegated_to_the_validator() -> None:
    bearer = FakeBearer()
    caller = await Authenticator(CLIENTS, bearer).authenticate({"authorization": "Bearer eyJ.abc.def"})
    assert caller == Caller("entra-app", "entra")
    assert bearer.seen == ["Bearer eyJ.abc.def"]


async def test_a_bearer_token_without_a_validator_is_401() -> None:
    error = await rejected(Authenticator(CLIENTS), {"authorization": "Bearer eyJ.secret.token"})
    assert b"eyJ.secret.token" not in error.body()


async def test_a_wrong_key_does_not_fall_back_to_the_bearer() -> None:
    bearer = FakeBearer()
    await rejected(Authenticator(CLIENTS, bearer), {"api-key": "nope", "authorization": "Bearer eyJ.abc.def"})
    assert bearer.seen == []


async def test_without_clients_no_key_is_accepted() -> None:
    await rejected(Authenticator([]), {"api-key": "anything"})


class FakeValidator:
    def __init__(self, app_id: str) -> None:
        self.app_id = app_id

    async def validate(self, authorization_header: str) -> Principal:
        return Principal("tenant", (), self.app_id)


ENTRA_CLIENTS = [
    Client("app-a", (Secret("key-a"),), entra_app_ids=("11111111-aaaa-bbbb-cccc-000000000001",)),
    Client("shared", (), key_secrets=("unused",), priority="low"),
]


async def test_an_entra_application_acts_as_the_client_that_lists_it() -> None:
    bearer = EntraBearer(FakeValidator("11111111-AAAA-bbbb-cccc-000000000001"), ENTRA_CLIENTS, None)  # type: ignore[arg-type]
    caller = await bearer.validate("Bearer x.y.z")
    assert (caller.name, caller.kind, caller.owner, caller.client) == ("app-a", "entra", "app-a", ENTRA_CLIENTS[0])


async def test_an_unlisted_application_is_refused_or_acts_as_the_default_client_owning_its_own_objects() -> None:
    refusing = EntraBearer(FakeValidator("99999999-0000-0000-0000-000000000009"), ENTRA_CLIENTS, None)  # type: ignore[arg-type]
    with pytest.raises(GatewayError) as caught:
        await refusing.validate("Bearer x.y.z")
    assert caught.value.status == 403 and "99999999" in caught.value.message
    default = EntraBearer(FakeValidator("99999999-0000-0000-0000-000000000009"), ENTRA_CLIENTS, "shared")  # type: ignore[arg-type]
    caller = await default.validate("Bearer x.y.z")
    assert caller.name == "shared" and caller.client is ENTRA_CLIENTS[1]  # its limits and priority
    assert caller.owner == "entra:99999999-0000-0000-0000-000000000009"  # but not the other apps' objects
