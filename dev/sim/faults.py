"""Fault switches of one region, flipped at runtime by tests and benchmarks (POST /_sim/{region}/faults).

| switch | type | effect |
| --- | --- | --- |
| down | bool | the listening socket is closed (connections refused) and open connections are cut |
| slow | clock s | every data-plane answer waits this long first (a generation's headers included) |
| error_500 | bool | every data-plane request answers 500 (the probe endpoints included) |
| drop_mid_stream | bool | SSE streams are cut after a few events, before their terminal event |
| capacity_429 | bool | generations answer a "high demand" 429 |
| no_remaining_headers | bool | no x-ratelimit-remaining-* headers (as provisioned deployments) |
| probe_status | int | 0 = off; else (400-599) GET /openai/models and /openai/v1/models answer this status |
| probe_delay | clock s | the probe endpoints wait this long first (probe timeouts) |
| cut_after_body | bool | a POST is read and performed (charged, created), then the connection drops before headers |
| gzip | bool | JSON answers are gzip-compressed whatever the request's accept-encoding |
| compact_done | bool | chat and completions streams end with `data:[DONE]` (no space: valid SSE, lenient parsers) |
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from dev.sim.errors import bad_request

DURATIONS = frozenset({"slow", "probe_delay"})
STATUSES = frozenset({"probe_status"})


@dataclass
class Faults:
    down: bool = False  # change it through SimRegion.set_down / update_faults: it closes the port
    slow: float = 0.0
    error_500: bool = False
    drop_mid_stream: bool = False
    capacity_429: bool = False
    no_remaining_headers: bool = False
    probe_status: int = 0
    probe_delay: float = 0.0
    cut_after_body: bool = False
    gzip: bool = False
    compact_done: bool = False


def check(update: dict[str, Any]) -> None:
    """Refuse (400) an update naming an unknown switch or giving a value of the wrong type."""
    known = {f.name for f in fields(Faults)}
    for name, value in update.items():
        if name not in known:
            raise bad_request(f"Unknown fault {name!r}; known: {sorted(known)}")
        if not _valid(name, value):
            raise bad_request(f"Invalid value for fault {name!r}: {value!r}")


def _valid(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return name not in DURATIONS | STATUSES
    if name in DURATIONS:
        return isinstance(value, int | float) and value >= 0
    if name in STATUSES:
        return isinstance(value, int) and (value == 0 or 400 <= value <= 599)
    return False
