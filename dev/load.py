"""Open-loop load through the official openai SDK, for the acceptance tests and the benchmarks.

Requests start on a fixed schedule whatever the answers do (as independent users would send them),
with max_retries=0 so that every 429 is seen. Time is in clock seconds of the simulation.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import openai
from openai import AsyncAzureOpenAI

PROMPT = "Summarise the quarterly report in three short bullet points for the board. " * 2
API_VERSION = "2024-10-21"


@dataclass
class Target:
    """Where one request goes: a client and the deployment name it asks for."""

    client: AsyncAzureOpenAI
    deployment: str
    label: str


@dataclass
class LoadResult:
    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    tokens_served: int = 0
    tokens_by_backend: Counter[str] = field(default_factory=Counter)
    missing_retry_after: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def rejected_429(self) -> int:
        return self.statuses[429]

    @property
    def failed(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != 200)


def request_cost(max_tokens: int) -> int:
    """What the gateway and the simulator charge for one load request (4 chars a token, 4 per message)."""
    return -(-len(PROMPT) // 4) + 4 + max_tokens


async def _one(target: Target, max_tokens: int, result: LoadResult, stream: bool) -> None:
    messages = [{"role": "user", "content": PROMPT}]
    try:
        if stream:
            chunks = await target.client.chat.completions.create(
                model=target.deployment,
                messages=messages,  # type: ignore[arg-type]
                max_tokens=max_tokens,
                stream=True,
                stream_options={"include_usage": True},
            )
            async for chunk in chunks:
                if chunk.usage is not None:
                    result.tokens_served += chunk.usage.total_tokens
                    result.tokens_by_backend[target.label] += chunk.usage.total_tokens
        else:
            raw = await target.client.chat.completions.with_raw_response.create(
                model=target.deployment,
                messages=messages,  # type: ignore[arg-type]
                max_tokens=max_tokens,
            )
            completion = raw.parse()
            backend = raw.headers.get("x-gateway-backend", target.label)
            tokens = completion.usage.total_tokens if completion.usage else 0
            result.tokens_served += tokens
            result.tokens_by_backend[backend] += tokens
        result.statuses[200] += 1
    except openai.APIStatusError as exc:
        result.statuses[exc.status_code] += 1
        if exc.status_code == 429 and not (
            exc.response.headers.get("retry-after") and exc.response.headers.get("retry-after-ms")
        ):
            result.missing_retry_after += 1
        if exc.status_code >= 500:
            result.errors.append(f"{exc.status_code}: {exc.message[:200]}")
    except openai.APIError as exc:  # connection errors and errors inside a stream
        result.statuses[-1] += 1
        result.errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")


async def run_load(
    targets: Sequence[Target],
    *,
    rate: float,
    duration: float,
    time_scale: float,
    max_tokens: int,
    stream: bool = False,
    during: Callable[[float], Awaitable[None]] | None = None,
) -> LoadResult:
    """Send `rate` requests per clock second for `duration` clock seconds, rotating over `targets`.

    `during(fraction)` is awaited once at each tenth of the run, for fault injection.
    """
    result = LoadResult()
    total = int(rate * duration)
    interval = 1.0 / (rate * time_scale)
    tasks: list[asyncio.Task[None]] = []
    started = time.monotonic()
    next_mark = 0.1
    for i in range(total):
        delay = started + i * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if during is not None and i / total >= next_mark:
            await during(next_mark)
            next_mark += 0.1
        tasks.append(asyncio.create_task(_one(targets[i % len(targets)], max_tokens, result, stream)))
        result.sent += 1
    await asyncio.gather(*tasks)
    return result


def gateway_client(url: str, key: str) -> AsyncAzureOpenAI:
    return AsyncAzureOpenAI(azure_endpoint=url, api_key=key, api_version=API_VERSION, max_retries=0, timeout=60)


def region_client(url: str, token: str) -> AsyncAzureOpenAI:
    return AsyncAzureOpenAI(
        azure_endpoint=url, azure_ad_token=token, api_version=API_VERSION, max_retries=0, timeout=60
    )
