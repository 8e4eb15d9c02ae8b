"""Active health checking: what the timer trigger runs against every host, spending no tokens.

A GET of the resource's model list (or the host's configured probe request) goes through the same
authentication as real traffic, so it also catches the most common misconfiguration: the gateway's
identity lacks its role (401/403). A probe is only evidence: live traffic outranks it (health.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import aiohttp

from shared.cluster import Host
from shared.health import ProbeResult


async def probe_host(
    session: aiohttp.ClientSession,
    host: Host,
    headers: dict[str, str],
    *,
    previous: ProbeResult | None,
    timeout_seconds: float,
    wall_time: Callable[[], float] = time.time,
) -> ProbeResult:
    url = host.probe.url(host.endpoint)
    started = time.perf_counter()
    try:
        timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        async with session.get(url, headers=headers, timeout=timeout, allow_redirects=False) as response:
            await response.read()
            status = response.status
    except TimeoutError:
        return _result(False, "probe timed out", started, previous, wall_time)
    except (aiohttp.ClientError, OSError) as exc:
        return _result(False, f"unreachable ({type(exc).__name__})", started, previous, wall_time)
    if status in (401, 403):
        reason = f"{status}: the gateway's identity lacks 'Cognitive Services OpenAI User' here, or the key is wrong"
        return _result(False, reason, started, previous, wall_time)
    if status >= 500:
        return _result(False, f"answered {status}", started, previous, wall_time)
    # 2xx, and a 429 too: the host is up and ours, just busy (cooldowns handle busy).
    return _result(True, "ok" if status < 300 else f"reachable ({status})", started, previous, wall_time)


def _result(
    healthy: bool, reason: str, started: float, previous: ProbeResult | None, wall_time: Callable[[], float]
) -> ProbeResult:
    failures = 0 if healthy else (previous.consecutive_failures if previous else 0) + 1
    return ProbeResult(healthy, reason, (time.perf_counter() - started) * 1000, wall_time(), failures)
