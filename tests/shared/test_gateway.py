"""The composition root's own duties: what the timer does besides probing."""

from __future__ import annotations

import json

from shared.affinity import Home
from shared.clock import ManualClock
from shared.config import load_settings
from shared.gateway import SWEEP_SECONDS, Gateway


class NoTokens:
    async def token(self) -> str:
        return "t"

    async def close(self) -> None:
        return None


def records(gateway: Gateway) -> int:
    count: int = gateway._affinity.describe()["records"]
    return count


async def test_the_timer_sweeps_expired_homes_at_most_once_per_sweep_interval() -> None:
    # A closed loopback port: every probe fails at once, and the sweep must happen all the same.
    doc = {
        "deployments": {"gpt-4o": [{"name": "e", "endpoint": "http://127.0.0.1:9", "deployment": "d", "tpm": 1000}]},
        "clients": [{"name": "app-a", "key_setting": "GATEWAY_KEY_APP_A"}],
    }
    env = {"GATEWAY_CONFIG": json.dumps(doc), "GATEWAY_KEY_APP_A": "k" * 32}
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
