"""What /status reports: per host health, cooldowns, ejections and window use against quota; panic
mode per deployment; usage per client. No secrets: names, numbers and reasons only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.config import Settings
from shared.health import HealthBoard
from shared.ledger import Ledger, utc_day


def describe(settings: Settings, ledger: Ledger, health: HealthBoard, in_flight: int, wall: float) -> dict[str, Any]:
    served = ledger.host_usage()
    deployments: dict[str, list[dict[str, Any]]] = {}
    for logical, hosts in settings.cluster.deployments.items():
        rows = deployments[logical] = []
        for host in hosts:
            free_tokens, free_requests = ledger.headroom(host.key, host.tpm, host.rpm)
            usage = served.get(host.key)
            rows.append(
                {
                    "name": host.name,
                    "deployment": host.deployment,
                    "endpoint": host.endpoint,
                    "priority": host.priority,
                    "weight": host.weight,
                    "tpm": host.tpm,
                    "rpm": host.rpm,
                    "window_tokens": round(ledger.window_tokens(host.key)),
                    "own_window_tokens": round(ledger.own_window_tokens(host.key)),
                    "reserved_tokens": round(ledger.open_tokens(host.key)),
                    "free_tokens": round(free_tokens),
                    "free_requests": round(free_requests),
                    "served_tokens": usage.tokens if usage else 0,
                    "served_requests": usage.requests if usage else 0,
                    **health.describe(host.key),
                }
            )
    return {
        "instance": settings.instance_id,
        "time_scale": settings.time_scale,  # seconds below are clock seconds: simulated ones when this is not 1
        "in_flight": in_flight,
        "ledger": ledger.describe(),
        "panic": {deployment: round(seconds, 1) for deployment, seconds in health.panic().items()},
        "deployments": deployments,
        "clients": _clients(settings, ledger, utc_day(wall)),
    }


def _clients(settings: Settings, ledger: Ledger, day: str) -> dict[str, Any]:
    """Today's usage per client (this instance's records plus what is shared), with its limits."""
    today: dict[str, dict[str, int]] = {}
    for (record_day, name, _deployment), record in ledger.records().items():
        if record_day == day:
            row = today.setdefault(name, {"prompt_tokens": 0, "completion_tokens": 0, "requests": 0})
            row["prompt_tokens"] += record.prompt
            row["completion_tokens"] += record.completion
            row["requests"] += record.requests
    result: dict[str, Any] = {}
    for client in settings.clients:
        limits = _limits(client.limits.__dict__)
        result[client.name] = {
            "priority": client.priority,
            "limits": limits,
            "tokens_today": ledger.day_tokens(client.name),
            "this_instance_today": today.pop(client.name, {"prompt_tokens": 0, "completion_tokens": 0, "requests": 0}),
        }
    for name, row in today.items():  # clients removed from the configuration since
        result[name] = {"tokens_today": ledger.day_tokens(name), "this_instance_today": row}
    return result


def _limits(values: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}
