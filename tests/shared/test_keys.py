"""Gateway keys that rotate without a restart: Key Vault secrets re-read in the background."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from shared.auth import Authenticator, Caller
from shared.clock import ManualClock
from shared.config import Client, Secret
from shared.errors import GatewayError


class Vault:
    """Secret name -> value; `down` makes every read fail like an unreachable vault."""

    def __init__(self, **secrets: str) -> None:
        self.secrets = dict(secrets)
        self.down = False
        self.reads = 0

    async def fetch(self, name: str) -> str | None:
        self.reads += 1
        if self.down:
            raise OSError("vault unreachable")
        return self.secrets.get(name)


CLIENTS = (
    Client("app-a", (), ("gateway-key-app-a", "gateway-key-app-a-next")),
    Client("app-b", (Secret("static-b"),)),
)


async def caller(auth: Authenticator, key: str) -> str | None:
    try:
        found: Caller = await auth.authenticate({"api-key": key})
    except GatewayError as exc:
        assert exc.status == 401
        return None
    return found.name


async def test_a_rotation_without_a_restart() -> None:
    vault = Vault(**{"gateway-key-app-a": "old"})
    auth = Authenticator(CLIENTS)
    assert await caller(auth, "old") is None  # nothing read yet
    await auth.keys.refresh(vault.fetch)
    assert await caller(auth, "old") == "app-a"
    assert await caller(auth, "static-b") == "app-b"
    # Step 1: the new key goes into the second secret; both are valid while the app moves over.
    vault.secrets["gateway-key-app-a-next"] = "new"
    await auth.keys.refresh(vault.fetch)
    assert await caller(auth, "old") == "app-a" and await caller(auth, "new") == "app-a"
    # Step 2: the old secret is emptied: the old key stops working at the next refresh.
    vault.secrets["gateway-key-app-a"] = ""
    await auth.keys.refresh(vault.fetch)
    assert await caller(auth, "old") is None
    assert await caller(auth, "new") == "app-a"


async def test_an_unreadable_vault_keeps_the_last_keys_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    vault = Vault(**{"gateway-key-app-a": "k1"})
    auth = Authenticator(CLIENTS)
    await auth.keys.refresh(vault.fetch)
    vault.down = True
    with caplog.at_level(logging.WARNING, logger="gateway"):
        for _ in range(3):
            await auth.keys.refresh(vault.fetch)
    assert await caller(auth, "k1") == "app-a"
    unreadable = [r for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(unreadable) == 2  # once per secret, not once per refresh
    assert all("k1" not in r.getMessage() for r in caplog.records)


async def test_a_deleted_secret_grants_nothing() -> None:
    vault = Vault(**{"gateway-key-app-a": "k1"})
    auth = Authenticator(CLIENTS)
    await auth.keys.refresh(vault.fetch)
    del vault.secrets["gateway-key-app-a"]
    await auth.keys.refresh(vault.fetch)
    assert await caller(auth, "k1") is None


async def test_the_ring_refreshes_on_its_interval() -> None:
    vault = Vault(**{"gateway-key-app-a": "k1"})
    auth = Authenticator(CLIENTS)
    clock = ManualClock()
    runner = auth.keys.run(vault.fetch, clock, interval=300)
    task = asyncio.create_task(runner)
    for _ in range(5):
        await asyncio.sleep(0)
    task.cancel()
    assert vault.reads >= 2  # two secrets per refresh; ManualClock.sleep advances by the interval
    assert clock.now() >= 300


class NoTokens:
    async def token(self) -> str:
        return "t"

    async def close(self) -> None:
        return None


async def test_the_gateway_reads_key_secrets_before_its_first_request() -> None:
    from shared.config import load_settings
    from shared.gateway import Gateway

    doc = {
        "deployments": {"gpt-4o": [{"name": "e", "endpoint": "https://e.example", "deployment": "d", "tpm": 1000}]},
        "clients": [{"name": "app-a", "key_secrets": ["gateway-key-app-a"]}],
    }
    settings = load_settings({"GATEWAY_CONFIG": json.dumps(doc), "GATEWAY_KEYVAULT_URI": "https://kv.example"})
    vault = Vault(**{"gateway-key-app-a": "from-the-vault"})
    gateway = Gateway(settings, tokens=NoTokens(), secrets=vault.fetch)
    try:
        await gateway._start()
        assert await caller(gateway.authenticator, "from-the-vault") == "app-a"
    finally:
        await gateway.close()
