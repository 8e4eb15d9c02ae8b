"""The gateway against the alternatives: the same offered loads on the same simulated regions.

The acceptance scenario (three regions of 10k / 20k / 30k TPM, requests of max_tokens 400, two simulated
minutes per load on 30x compressed time) at 70% and 130% of the aggregate TPM, through each contender:

- gateway: the dev host (dev.stack.Stack), one endpoint;
- round-robin: the client rotates over the three regions itself (an L7 round-robin without key problems);
- LiteLLM: its Router in-process (`await router.acompletion(...)`): simple-shuffle without and with tpm/rpm per
  deployment, and usage-based-routing-v2, when LiteLLM is installed (benchmarks/requirements.txt, own venv).

Every contender gets the same open-loop schedule (requests start on time whatever the answers do) and answers
from the same regions, reset before each run. Stdout gets the tables, stderr the progress.

    python -m benchmarks.compare
    .venv-bench/bin/python -m benchmarks.compare   # with the LiteLLM contenders
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dev import load
from dev.stack import CHAT, DEFAULT_REGIONS, STATIC_TOKEN, Stack

TIME_SCALE = 30.0
MAX_TOKENS = 400
LOADS = (0.70, 1.30)
WINDOW = 60.0  # clock seconds of Azure's (and the gateway's) sliding TPM window
REQUEST_TIMEOUT = 60.0  # real seconds; bounds every request whatever the contender does
API_VERSION = load.API_VERSION
MESSAGES = [{"role": "user", "content": load.PROMPT}]

# One client request: its index in the schedule -> total tokens served. Raises when the client sees a failure.
Send = Callable[[int], Awaitable[int]]


@dataclass
class Run:
    sent: int = 0
    statuses: Counter[str] = field(default_factory=Counter)  # "200", "429", or the other error's name
    tokens: int = 0
    latencies_ms: list[float] = field(default_factory=list)  # successful requests only
    upstream: int = 0
    upstream_429: int = 0
    start_lag_ms: float = 0.0  # how late the driver started its latest request: is the schedule honest?
    last_answer: float = 0.0  # simulated seconds from the first request to the last answer (retries spill over)

    @property
    def other(self) -> int:
        return sum(n for status, n in self.statuses.items() if status not in ("200", "429"))


@dataclass
class Contender:
    name: str
    make: Callable[[Stack], Send]  # called afresh per run: no client-side state carries over
    notes: list[str] = field(default_factory=list)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def rate_for(stack: Stack, fraction: float) -> float:
    """Requests per simulated second that offer `fraction` of the aggregate TPM (as the acceptance tests)."""
    return fraction * sum(r.tpm for r in stack.regions) / 60.0 / load.request_cost(MAX_TOKENS)


async def _one(send: Send, index: int, run: Run) -> None:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            tokens = await send(index)
    except Exception as exc:  # noqa: BLE001 - whatever a contender raises is what its caller would see
        status = getattr(exc, "status_code", None)
        run.statuses["429" if status == 429 else f"{type(exc).__name__}({status})"] += 1
        return
    run.latencies_ms.append((time.perf_counter() - started) * 1000)
    run.statuses["200"] += 1
    run.tokens += tokens


async def drive(send: Send, *, rate: float, duration: float) -> Run:
    """Open loop, as dev.load.run_load: request i starts at i / rate clock seconds, answered or not."""
    run = Run()
    total = int(rate * duration)
    interval = 1.0 / (rate * TIME_SCALE)
    tasks: list[asyncio.Task[None]] = []
    started = time.monotonic()
    for i in range(total):
        delay = started + i * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        run.start_lag_ms = max(run.start_lag_ms, -delay * 1000)
        tasks.append(asyncio.create_task(_one(send, i, run)))
        run.sent += 1
    await asyncio.gather(*tasks)
    run.last_answer = (time.monotonic() - started) * TIME_SCALE
    return run


def upstream_counts(stack: Stack) -> tuple[int, int]:
    """(requests that reached a region, of which 429s), from the simulator's counters."""
    requests = throttled = 0
    for region in stack.regions:
        for stats in stack.region_stats(region.name)["deployments"].values():
            refused = stats["throttled_quota"] + stats["throttled_capacity"]
            requests += stats["admitted_requests"] + refused + stats["errors_500"]
            throttled += refused
    return requests, throttled


# --- contenders -----------------------------------------------------------------------------------------------


def _tokens(completion: Any) -> int:
    usage = getattr(completion, "usage", None)
    return int(getattr(usage, "total_tokens", 0) or 0)


def gateway(stack: Stack) -> Send:
    client = load.gateway_client(stack.url, stack.client_key)

    async def send(index: int) -> int:
        completion = await client.chat.completions.create(
            model=CHAT,
            messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=MAX_TOKENS,
        )
        return _tokens(completion)

    return send


def round_robin(stack: Stack) -> Send:
    targets = [(load.region_client(stack.region_urls[r.name], STATIC_TOKEN), r.physical) for r in stack.regions]

    async def send(index: int) -> int:
        client, deployment = targets[index % len(targets)]
        completion = await client.chat.completions.create(
            model=deployment,
            messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=MAX_TOKENS,
        )
        return _tokens(completion)

    return send


def import_litellm() -> Any:
    """LiteLLM, or None. Imported by name: it is optional and lives in a venv of its own."""
    # Without this LiteLLM fetches its model-cost map from the internet at import.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        return importlib.import_module("litellm")
    except ImportError:
        return None


class SimulatedTime:
    """LiteLLM's timers run on the wall clock, the simulated regions' on a 30x clock. Installed once, this puts
    LiteLLM's timers on the regions' clock, so that it behaves as it would against real regions in real time.

    These are internals of LiteLLM (checked with 1.110): what cannot be found is listed in `missing`, and that
    timer then runs 30x too long in simulated terms.
    """

    def __init__(self) -> None:
        self.origin = datetime.datetime.now(datetime.UTC)
        self.started = time.monotonic()
        self.missing: list[str] = []
        # Usage-based routing counts tokens and requests per calendar minute of this clock.
        self._patch("litellm.router_strategy.lowest_tpm_rpm_v2", "get_utc_datetime", lambda real: self.now)
        # A deployment that answered 429 cools down for the answer's Retry-After: simulated seconds.
        self._patch("litellm.router_rust.core", "retry_after_seconds", _scaled_retry_after)
        # Every retry backoff of the Router sleeps here.
        self._patch("litellm.router_python_host", "PythonHost.sleep", _scaled_sleep)

    def _patch(self, module_name: str, path: str, wrap: Callable[[Any], Any]) -> None:
        *owners, name = path.split(".")
        try:
            owner = importlib.import_module(module_name)
            for attribute in owners:
                owner = getattr(owner, attribute)
            setattr(owner, name, wrap(getattr(owner, name)))
        except (ImportError, AttributeError):
            self.missing.append(f"{module_name}.{path}")

    def restart(self) -> None:
        """Simulated time restarts on a whole minute: LiteLLM's minute buckets line up with the run's minutes."""
        now = datetime.datetime.now(datetime.UTC)
        self.origin = now.replace(second=0, microsecond=0) + datetime.timedelta(minutes=1)
        self.started = time.monotonic()

    def now(self) -> datetime.datetime:
        return self.origin + datetime.timedelta(seconds=(time.monotonic() - self.started) * TIME_SCALE)


def _scaled_retry_after(real: Callable[[BaseException], float | None]) -> Callable[[BaseException], float | None]:
    def retry_after_seconds(error: BaseException) -> float | None:
        seconds = real(error)
        return None if seconds is None else seconds / TIME_SCALE

    return retry_after_seconds


def _scaled_sleep(real: Callable[[Any, float], Awaitable[None]]) -> Callable[[Any, float], Awaitable[None]]:
    def sleep(host: Any, seconds: float) -> Awaitable[None]:
        return real(host, seconds / TIME_SCALE)

    return sleep


def litellm_router(litellm: Any, clock: SimulatedTime, strategy: str, *, limits: bool = True) -> Contender:
    def make(stack: Stack) -> Send:
        model_list: list[dict[str, Any]] = []
        for r in stack.regions:
            params: dict[str, Any] = {
                "model": f"azure/{r.physical}",
                "api_base": stack.region_urls[r.name],
                "api_key": "any",  # the simulated regions accept any api-key
                "api_version": API_VERSION,
                "base_model": "azure/gpt-4o",  # else every request logs "Could not identify azure model"
            }
            if limits:
                # Simple-shuffle weights deployments by these; usage-based routing keeps under them.
                params |= {"tpm": r.tpm, "rpm": r.tpm * 6 // 1000}  # Azure's default RPM, as the simulator's
            model_list.append({"model_name": CHAT, "litellm_params": params})
        router = litellm.Router(
            model_list=model_list,
            routing_strategy=strategy,
            # LiteLLM's default cooldown of a deployment after a 429, in simulated seconds.
            cooldown_time=litellm.constants.DEFAULT_COOLDOWN_TIME_SECONDS / TIME_SCALE,
            timeout=REQUEST_TIMEOUT,
        )
        clock.restart()

        async def send(index: int) -> int:
            completion = await router.acompletion(model=CHAT, messages=MESSAGES, max_tokens=MAX_TOKENS)
            return _tokens(completion)

        return send

    if limits:
        notes = ["tpm and rpm set per deployment to the region's quota"]
    else:
        notes = ["no tpm/rpm per deployment: an even shuffle"]
    name = f"LiteLLM {litellm_version()} Router, {strategy}" + ("" if limits else " without tpm/rpm")
    return Contender(name, make, notes)


def litellm_settings(litellm: Any, clock: SimulatedTime) -> str:
    defaults = litellm.constants
    lines = [
        f"LiteLLM {litellm_version()}: litellm.Router in the load's process, three azure/ deployments of one"
        f" model_name, num_retries {defaults.DEFAULT_MAX_RETRIES} (default). A deployment answering 429 cools"
        f" down for its Retry-After (else {defaults.DEFAULT_COOLDOWN_TIME_SECONDS} s, the default).",
        "Its cooldowns, retry backoffs and usage minutes run on the simulated clock (patched in: its own run on"
        " the wall clock, 30x too long here); usage minutes start on the run's whole minutes.",
    ]
    if clock.missing:
        lines.append(f"NOT on the simulated clock (not found in this LiteLLM): {', '.join(clock.missing)}")
    return "\n".join(lines)


def litellm_version() -> str:
    from importlib.metadata import version

    return version("litellm")


# --- running --------------------------------------------------------------------------------------------------


async def measure(stack: Stack, contender: Contender, fraction: float, duration: float) -> Run:
    # Warm up connections and lazy imports on a throwaway client (on empty regions: the previous run filled
    # them), wait out a window so that client-side windows (the gateway's) are empty, then empty the regions'.
    stack.reset_regions()
    warm = contender.make(stack)
    for i in range(len(stack.regions)):
        try:
            await warm(i)
        except Exception as exc:  # noqa: BLE001 - a failed warm-up shows again in the run itself
            print(f"    warm-up: {type(exc).__name__}: {str(exc)[:120]}", file=sys.stderr, flush=True)
    await asyncio.sleep(WINDOW / TIME_SCALE + 0.1)
    stack.reset_regions()
    send = contender.make(stack)
    rate = rate_for(stack, fraction)
    print(
        f"  {contender.name}: {int(rate * duration)} requests over {duration / TIME_SCALE:.1f} s",
        file=sys.stderr,
        flush=True,
    )
    run = await drive(send, rate=rate, duration=duration)
    run.upstream, run.upstream_429 = upstream_counts(stack)
    print(f"    {dict(run.statuses)}, upstream {run.upstream}", file=sys.stderr, flush=True)
    return run


def table(contender: Contender, runs: dict[float, Run], capacity: int) -> str:
    header = (
        f"{'load':<6}{'sent':>6}{'200':>6}{'429':>6}{'other':>7}{'up 429':>8}{'up/req':>8}"
        f"{'served':>9}{'last s':>8}{'p50 ms':>9}{'p99 ms':>9}"
    )
    lines = [contender.name, header]
    for fraction, run in runs.items():
        lines.append(
            f"{fraction:<6.0%}{run.sent:>6}{run.statuses['200']:>6}{run.statuses['429']:>6}{run.other:>7}"
            f"{run.upstream_429:>8}{run.upstream / max(1, run.sent):>8.2f}{run.tokens / capacity:>9.1%}"
            f"{run.last_answer:>8.0f}{percentile(run.latencies_ms, 0.5):>9.0f}"
            f"{percentile(run.latencies_ms, 0.99):>9.0f}"
        )
    others = Counter[str]()
    for run in runs.values():
        others.update({status: n for status, n in run.statuses.items() if status not in ("200", "429")})
    if others:
        lines.append(f"  other errors: {dict(others)}")
    lagging = max(run.start_lag_ms for run in runs.values())
    if lagging > 50:
        lines.append(f"  the load driver started requests up to {lagging:.0f} ms late (CPU-bound client)")
    lines += [f"  {note}" for note in contender.notes]
    return "\n".join(lines)


async def compare(workdir: Path, contenders: list[Contender], minutes: float) -> dict[str, dict[float, Run]]:
    duration = 60.0 * minutes
    results: dict[str, dict[float, Run]] = {c.name: {} for c in contenders}
    for fraction in LOADS:
        print(f"load {fraction:.0%}: starting the simulated regions and the gateway...", file=sys.stderr, flush=True)
        # Fresh processes per load: the gateway's windows, cooldowns and ejections start empty.
        with Stack(workdir / f"load-{fraction:.2f}", time_scale=TIME_SCALE) as stack:
            for contender in contenders:
                results[contender.name][fraction] = await measure(stack, contender, fraction, duration)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=2.0, help="simulated minutes per run (default 2)")
    parser.add_argument("--seed", type=int, default=1, help="for in-process randomness (LiteLLM's shuffle)")
    args = parser.parse_args()
    random.seed(args.seed)
    contenders = [
        Contender("gateway (dev host, one instance)", gateway),
        Contender("round-robin straight to the regions (client-side rotation)", round_robin),
    ]
    litellm = import_litellm()
    if litellm is None:
        footer = (
            "LiteLLM is not installed: its contenders were skipped. To include them, in a venv of their own:\n"
            "  python3 -m venv .venv-bench && .venv-bench/bin/pip install -r benchmarks/requirements.txt\n"
            "  .venv-bench/bin/python -m benchmarks.compare"
        )
        print(footer, file=sys.stderr, flush=True)
    else:
        litellm.suppress_debug_info = True
        clock = SimulatedTime()
        contenders += [
            litellm_router(litellm, clock, "simple-shuffle", limits=False),
            litellm_router(litellm, clock, "simple-shuffle"),
            litellm_router(litellm, clock, "usage-based-routing-v2"),
        ]
        footer = litellm_settings(litellm, clock)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as workdir:
        results = asyncio.run(compare(Path(workdir), contenders, args.minutes))
    print(f"done in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)

    capacity = int(sum(r.tpm for r in DEFAULT_REGIONS) * args.minutes)
    print(
        f"Regions {' / '.join(f'{r.name} {r.tpm // 1000}k' for r in DEFAULT_REGIONS)} TPM; {args.minutes:g} simulated"
        f" minutes per load at {TIME_SCALE:g}x time; open loop; {load.request_cost(MAX_TOKENS)}-token requests"
        f" (max_tokens {MAX_TOKENS}).\n"
        "429 and other: what clients saw; up 429: regions' 429s; up/req: requests reaching a region per client"
        f" request;\nserved: tokens answered / {capacity} quota tokens; last s: simulated seconds to the last"
        " answer; p50/p99: latency of the 200s, real ms."
    )
    for contender in contenders:
        print()
        print(table(contender, results[contender.name], capacity))
    print()
    print(footer)


if __name__ == "__main__":
    main()
