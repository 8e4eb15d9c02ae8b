"""The composition root's own duties: what the timer does besides probing."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from shared.affinity import Home
from shared.clock import ManualClock
from shared.config import load_settings
from shared.gateway import SWEEP_SECONDS, Gateway
from shared.table_ledger import WARMUP_LIMIT_CYCLES


class NoTokens:
    async def token(self) -> str:
        return "t"

    async def close(self) -> None:
        return None


AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
# Nothing listens on port 9 of the loopback: every call is refused at once.
UNREACHABLE_TABLE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    f"AccountKey={AZURITE_KEY};TableEndpoint=http://127.0.0.1:9/devstoreaccount1;"
)
KEY = "k" * 32


def get(path: str, query: str, headers: dict[str, str]) -> Request:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    raw = [(name.encode(), value.encode()) for name, value in headers.items()]
    scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "query_string": query.encode()}
    return Request({**scope, "headers": raw}, receive)


def records(gateway: Gateway) -> int:
    count: int = gateway._affinity.describe()["records"]
    return count


async def test_the_timer_sweeps_expired_homes_at_most_once_per_sweep_interval() -> None:
    # A closed loopback port: every probe fails at once, and the sweep must happen all the same.
    doc = {
        "deployments": {"gpt-4o": [{"name": "e", "endpoint": "http://127.0.0.1:9", "deployment": "d", "tpm": 1000}]},
        "clients": [{"name": "app-a", "key_setting": "GATEWAY_KEY_APP_A"}],
    }
    env = {"GATEWAY_CONFIG": json.dumps(doc), "GATEWAY_KEY_APP_A": KEY}
    clock = ManualClock()
    gateway = Gateway(load_settings(env), clock=clock, tokens=NoTokens())
    try:
        home = Home("gpt-4o/e", "app-a")
        gateway._affinity.put("file:file-old", home, 10)
        gateway._affinity.put("file:file-kept", home, 10 * SWEEP_SECONDS)
        clock.advance(20)
        await gateway.probe()
        assert records(gateway) == 1

        gateway._affinity.put("file:file-soon", home, 5)
        clock.advance(10)
        await gateway.probe()
        assert records(gateway) == 2  # swept less than an interval ago: not yet

        clock.advance(SWEEP_SECONDS)
        await gateway.probe()
        assert records(gateway) == 1
    finally:
        await gateway.close()


async def test_usage_answers_503_when_the_table_cannot_be_read_rather_than_a_partial_report() -> None:
    doc = {
        "deployments": {"gpt-4o": [{"name": "e", "endpoint": "http://127.0.0.1:9", "deployment": "d", "tpm": 1000}]},
        "clients": [{"name": "ops", "key_setting": "GATEWAY_KEY_OPS", "admin": True}],
    }
    env = {
        "GATEWAY_CONFIG": json.dumps(doc),
        "GATEWAY_KEY_OPS": KEY,
        "GATEWAY_TABLE_CONNECTION_STRING": UNREACHABLE_TABLE,
    }
    gateway = Gateway(load_settings(env), tokens=NoTokens())
    try:
        response = await gateway.usage(get("/usage", "from=2026-11-01&to=2026-11-30", {"api-key": KEY}))
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        error = json.loads(bytes(response.body))["error"]
        assert error["code"] == "storage_unavailable"
        assert "Table Storage" in error["message"]
    finally:
        await gateway.close()


async def test_readiness_waits_for_the_shared_view_or_its_warm_up_limit() -> None:
    """A new instance admits a small share until it has read what the others use: not ready before that (a
    platform that routes by readiness sends it nothing yet), ready once read or once the warm-up limit passed."""
    doc = {
        "deployments": {"gpt-4o": [{"name": "e", "endpoint": "http://127.0.0.1:9", "deployment": "d", "tpm": 1000}]},
        "clients": [{"name": "app-a", "key_setting": "GATEWAY_KEY_APP_A"}],
    }
    local_env = {"GATEWAY_CONFIG": json.dumps(doc), "GATEWAY_KEY_APP_A": KEY}
    env = {**local_env, "GATEWAY_TABLE_CONNECTION_STRING": UNREACHABLE_TABLE}
    clock = ManualClock()
    gateway = Gateway(load_settings(env), clock=clock, tokens=NoTokens())
    try:
        response = await gateway.readyz(get("/readyz", "", {}))
        assert response.status_code == 503
        assert json.loads(bytes(response.body))["status"] == "warming"
        clock.advance(WARMUP_LIMIT_CYCLES * gateway.settings.table.read_cache_seconds)
        response = await gateway.readyz(get("/readyz", "", {}))
        assert response.status_code == 200 and json.loads(bytes(response.body))["status"] == "ready"
    finally:
        await gateway.close()
    local = Gateway(load_settings(local_env), clock=ManualClock(), tokens=NoTokens())
    try:
        assert (await local.readyz(get("/readyz", "", {}))).status_code == 200  # nothing to learn first
    finally:
        await local.close()
