"""Added latency of the gateway: the same requests sent straight to a simulated region, through two bare
pass-through proxies (benchmarks/passthrough.py) and through the gateway, interleaved in one run, so all see
the same machine at the same moment.

The simulated region answers at once (no model latency), so what differs is each hop's own cost. The
pass-throughs are the floor of any Python proxy: aiohttp's server, and the gateway's own server stack
(uvicorn + Starlette) with nothing else; the gateway adds authentication, routing, admission, accounting
and its access line on top.

    python -m benchmarks.latency [--requests 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from benchmarks.capacity import passthrough
from dev.stack import CHAT, STATIC_TOKEN, RegionSpec, Stack

API = "api-version=2024-10-21"
BODY = {"messages": [{"role": "user", "content": "How far is the moon?"}], "max_tokens": 16}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def timed(session: aiohttp.ClientSession, url: str, headers: dict[str, str], stream: bool) -> tuple[float, float]:
    """(time to the first body byte, time to the last) in milliseconds."""
    body = json.dumps({**BODY, "stream": stream}).encode()
    started = time.perf_counter()
    async with session.post(url, data=body, headers={**headers, "content-type": "application/json"}) as response:
        first = None
        async for _ in response.content.iter_any():
            first = first or time.perf_counter()
        if response.status != 200:
            raise SystemExit(f"{url} answered {response.status}")
    ended = time.perf_counter()
    return ((first or ended) - started) * 1000, (ended - started) * 1000


PROXIES = {"aiohttp": "aiohttp pass", "starlette": "starlette pass"}


async def measure(stack: Stack, proxies: dict[str, str], requests: int) -> dict[str, dict[str, list[float]]]:
    region = stack.regions[0]
    upstream_path = f"/openai/deployments/{region.physical}/chat/completions?{API}"
    bearer = {"authorization": f"Bearer {STATIC_TOKEN}"}
    paths = {
        "direct": (stack.region_urls[region.name] + upstream_path, bearer),
        **{PROXIES[kind]: (url + upstream_path, bearer) for kind, url in proxies.items()},
        "gateway": (f"{stack.url}/openai/deployments/{CHAT}/chat/completions?{API}", {"api-key": stack.client_key}),
    }
    samples: dict[str, dict[str, list[float]]] = {
        f"{kind}/{name}": {"first": [], "last": []} for kind in ("json", "stream") for name in paths
    }
    async with aiohttp.ClientSession() as session:
        for _ in range(50):  # warm connections and caches on both paths
            for url, headers in paths.values():
                await timed(session, url, headers, False)
        for i in range(requests):
            for kind in ("json", "stream"):
                for name, (url, headers) in paths.items():
                    first, last = await timed(session, url, headers, kind == "stream")
                    samples[f"{kind}/{name}"]["first"].append(first)
                    samples[f"{kind}/{name}"]["last"].append(last)
            if (i + 1) % max(1, requests // 10) == 0:
                print(f"  {i + 1}/{requests} rounds", file=sys.stderr, flush=True)
    return samples


def report(samples: dict[str, dict[str, list[float]]], requests: int) -> str:
    lines = [f"{requests} requests per path, sequential, loopback, simulator with zero model latency", ""]
    lines.append(f"{'path':<30}{'metric':<12}{'p50 ms':>9}{'p99 ms':>9}")
    for kind, metric, label in (
        ("json", "last", "response"),
        ("stream", "first", "first byte"),
        ("stream", "last", "last byte"),
    ):
        direct = samples[f"{kind}/direct"][metric]
        names = [key.split("/", 1)[1] for key in samples if key.startswith(f"{kind}/")]
        for name in names:
            values = samples[f"{kind}/{name}"][metric]
            lines.append(
                f"{kind + ' ' + name:<30}{label:<12}{percentile(values, 0.5):>9.2f}{percentile(values, 0.99):>9.2f}"
            )
        for name in names[1:]:
            values = samples[f"{kind}/{name}"][metric]
            added50 = percentile(values, 0.5) - percentile(direct, 0.5)
            added99 = percentile(values, 0.99) - percentile(direct, 0.99)
            what = "added" if name == "gateway" else f"added ({name})"
            lines.append(f"{kind + ' ' + what:<30}{label:<12}{added50:>9.2f}{added99:>9.2f}")
        lines.append("")
    mean_gap = statistics.mean(
        g - d for g, d in zip(samples["stream/gateway"]["first"], samples["stream/direct"]["first"], strict=True)
    )
    lines.append(f"mean added time to first streamed byte: {mean_gap:.2f} ms")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    regions = (RegionSpec("eastus", 100_000_000),)
    with tempfile.TemporaryDirectory() as workdir, contextlib.ExitStack() as processes:
        print("starting a simulated region, two bare proxies and the gateway...", file=sys.stderr, flush=True)
        stack = processes.enter_context(
            Stack(Path(workdir), regions=regions, simulator_args=("--ttft", "0", "--per-token", "0"))
        )
        upstream = stack.region_urls[regions[0].name]
        proxies = {
            kind: processes.enter_context(passthrough(kind, upstream, Path(workdir), kind))[1] for kind in PROXIES
        }
        samples = asyncio.run(measure(stack, proxies, args.requests))
    print(report(samples, args.requests))


if __name__ == "__main__":
    main()
