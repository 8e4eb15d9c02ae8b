"""Storage work of the shared ledger as instances grow, against Azurite, counted by partition.

I real TableLedger instances (the production class, in this process, each with its own client and
background loops) share one table in Azurite behind dev/table_meter.py, which counts every call and
every entity by partition. A steady load runs on every instance: requests over H hosts, each reserved
on its host and on its client's window, settled a few seconds later. After a warm-up the meter is
zeroed and the run is measured: storage calls and entities per clock second, per instance and in all,
the hottest partition, and the view error (what each instance believes a host's window holds, against
the true sum of every instance's own window, as a fraction of that true window).

Beside it, in the same run, main's design (one row per slot, host and instance; every instance reads
both minute partitions every second), loaded from git as the baseline, for the instance counts it can
still run here; and the formulas of both, extrapolated to 100, 200 and 1,000 instances.

    python -m benchmarks.shared_state                       # the sweep: 1, 5, 20, 50 instances, 10 hosts
    python -m benchmarks.shared_state --instances 20 --hosts 30

The last line printed is one JSON object (of the largest run) with `instances`, `hosts`,
`hottest_partition_entities_per_s`, `account_transactions_per_s`, `view_error_p99` and more.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import math
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
from azure.data.tables.aio import TableClient

from dev.azurite import ACCOUNT, ACCOUNT_KEY, Azurite
from dev.stack import PYTHON, ROOT
from shared import summary
from shared.clock import ScaledClock
from shared.ledger import TokenUsage
from shared.pulse import PULSE_SHARDS
from shared.recent_usage import CHUNK_CHARS, SLOTS_KEPT
from shared.table_ledger import TableLedger

BASELINE_COMMIT = "e356610"  # main's table_ledger.py when this design replaced it
REQUESTS_PER_INSTANCE = 2.0  # per clock second
COST = 1_000
TPM = 10_000_000  # per host: the view is measured, not admission
CLIENTS = 5
SUMMARY_READS = 1.1  # per instance and cycle: one, and a second look when the summary was not there yet
SLOTS_READ = 8.2  # main's design: slot rows of one (host, instance) in its two minute partitions, on average
ITEM_CHARS = 45  # one slot of one key, or one key's limits or day, as JSON in a chunk


@dataclass
class Result:
    design: str
    instances: int
    hosts: int
    seconds: float  # clock seconds measured
    account_transactions_per_s: float
    entities_per_s: float
    per_instance_transactions_per_s: float
    per_instance_entities_per_s: float
    hottest_partition: str
    hottest_partition_entities_per_s: float
    view_error_p50: float  # |believed - true| / true, over instances x hosts x seconds
    view_error_p99: float
    view_age_p99_s: float | None
    throttled: int


def _connection(url: str) -> str:
    account = f"AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY}"
    return f"DefaultEndpointsProtocol=http;{account};TableEndpoint={url}/{ACCOUNT};"


async def _meter(path: str, post: bool = False) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.request("POST" if post else "GET", path) as answer:
        report: dict[str, Any] = await answer.json()
    return report


def baseline_module() -> ModuleType | None:
    """Main's TableLedger, from git: the design this one replaced, measured the same way."""
    try:
        source = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{BASELINE_COMMIT}:shared/table_ledger.py"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    spec = importlib.util.spec_from_loader("baseline_table_ledger", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    exec(compile(source, f"{BASELINE_COMMIT}:shared/table_ledger.py", "exec"), module.__dict__)
    return module


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


async def measure(
    design: str, factory: Any, meter_url: str, instances: int, hosts: int, warmup: float, seconds: float, scale: float
) -> Result:
    clock = ScaledClock(scale)
    table = f"bench{design}{instances}x{hosts}{random.randrange(10**6)}"
    async with TableClient.from_connection_string(_connection(meter_url), table) as client:
        await client.create_table()
    ledgers = [
        factory(TableClient.from_connection_string(_connection(meter_url), table, retry_total=0), clock, f"bench-{i}")
        for i in range(instances)
    ]
    keys = [f"region{h}/gpt-4o-region{h}" for h in range(hosts)]
    loops = [asyncio.create_task(ledger.run()) for ledger in ledgers]
    rng = random.Random(instances * 1000 + hosts)
    errors: list[float] = []
    ages: list[float] = []
    pending: list[tuple[float, Any, Any, int]] = []  # (settle at, ledger, reservation, tokens)

    def step() -> None:
        now = clock.now()
        for ledger in ledgers:
            for _ in range(_arrivals(rng, REQUESTS_PER_INSTANCE * 0.1)):
                client = f"bench-client-{rng.randrange(CLIENTS)}"
                key = rng.choice(keys)
                reservation = ledger.reserve(
                    (key, f"client:{client}"), COST, prompt=COST // 4, client=client, deployment="gpt-4o"
                )
                pending.append((now + rng.uniform(0.5, 5.0), ledger, reservation, rng.randint(COST // 2, COST)))
        for item in [p for p in pending if p[0] <= now]:
            pending.remove(item)
            item[1].settle(item[2], TokenUsage(item[3] // 4, item[3] - item[3] // 4))

    def sample() -> None:
        for key in keys:
            truth = sum(ledger.own_window_tokens(key) for ledger in ledgers)
            if truth > 0:
                errors.extend(abs(ledger.window_tokens(key) - truth) / truth for ledger in ledgers)
        for ledger in ledgers:
            age = ledger.describe().get("view_age_seconds")
            if age is not None:
                ages.append(float(age))

    try:
        started = clock.now()
        while clock.now() - started < warmup:
            step()
            await clock.sleep(0.1)
        await _meter(f"{meter_url}/_meter/reset", post=True)
        began = time.monotonic()
        next_sample = clock.now()
        while clock.now() - started < warmup + seconds:
            step()
            if clock.now() >= next_sample:
                sample()
                next_sample += 1.0
            await clock.sleep(0.1)
        counts = await _meter(f"{meter_url}/_meter")
        measured = (time.monotonic() - began) * scale
    finally:
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        for ledger in ledgers:
            await ledger._client.close()
    entities: dict[str, int] = {}
    for kind in ("entities_read", "entities_written"):
        for partition, count in counts[kind].items():
            entities[partition] = entities.get(partition, 0) + count
    hottest = max(entities, key=lambda p: entities[p]) if entities else ""
    total_entities = sum(entities.values())
    return Result(
        design=design,
        instances=instances,
        hosts=hosts,
        seconds=round(measured, 1),
        account_transactions_per_s=round(counts["transactions"] / measured, 1),
        entities_per_s=round(total_entities / measured, 1),
        per_instance_transactions_per_s=round(counts["transactions"] / measured / instances, 2),
        per_instance_entities_per_s=round(total_entities / measured / instances, 2),
        hottest_partition=hottest,
        hottest_partition_entities_per_s=round(entities.get(hottest, 0) / measured, 1),
        view_error_p50=round(percentile(errors, 0.5), 5),
        view_error_p99=round(percentile(errors, 0.99), 5),
        view_age_p99_s=round(percentile(ages, 0.99), 2) if ages else None,
        throttled=int(counts["throttled"]),
    )


def _arrivals(rng: random.Random, mean: float) -> int:
    """Poisson arrivals in one step."""
    count, threshold, product = 0, pow(2.718281828459045, -mean), rng.random()
    while product > threshold:
        count += 1
        product *= rng.random()
    return count


def formula(instances: int, hosts: int) -> dict[str, float]:
    """Steady state, every instance busy, one second: this design and main's.

    This design, per instance: one pulse write (its chunks: every key's slots, limits and days), one usage-row
    write (its dirty (client, deployment) rows: the clients it served in that second), one summary read
    (the lease and one chunk; again, a little later, when read before the new one landed: SUMMARY_READS
    calls counted). The leader adds one query per pulse partition (every pulse once) and one summary
    write (lease + chunk) per copy of the summary (one copy per READERS_PER_COPY instances).
    Hottest partition: a summary copy's.
    Main's design: each instance upserts its slot rows (one per host, one batch) and reads both minute
    partitions, which hold every instance's rows: I x H x SLOTS_READ entities per instance per second."""
    dirty = CLIENTS * (1 - (1 - 1 / CLIENTS) ** REQUESTS_PER_INSTANCE)  # clients served in one flush
    chunks = math.ceil((hosts + CLIENTS) * (SLOTS_KEPT * ITEM_CHARS + 2 * ITEM_CHARS) / CHUNK_CHARS)
    copies = summary.copies_for(instances)
    calls = instances * (1 + 1 + SUMMARY_READS) + PULSE_SHARDS + copies
    entities = instances * (chunks + dirty + SUMMARY_READS * (1 + chunks)) + instances * chunks + copies * (1 + chunks)
    summary_partition = instances / copies * SUMMARY_READS * (1 + chunks) + 1 + chunks
    pulse_partition = 2 * instances * chunks / PULSE_SHARDS
    base_read = instances * instances * hosts * SLOTS_READ
    return {
        "account_transactions_per_s": round(calls),
        "per_instance_transactions_per_s": round(calls / instances, 2),
        "per_instance_entities_per_s": round(entities / instances, 2),
        "hottest_partition_entities_per_s": round(max(summary_partition, pulse_partition)),
        "baseline_transactions_per_s": round(instances * 3),
        "baseline_per_instance_entities_per_s": round(base_read / instances + hosts),
        "baseline_hottest_partition_entities_per_s": round(base_read * 0.75 + instances * hosts),
    }


def _row(result: Result) -> str:
    return (
        f"{result.design:9} {result.instances:5} {result.hosts:5} {result.account_transactions_per_s:9.1f} "
        f"{result.per_instance_transactions_per_s:8.2f} {result.entities_per_s:10.1f} "
        f"{result.per_instance_entities_per_s:9.2f} {result.hottest_partition_entities_per_s:9.1f} "
        f"{result.hottest_partition[:12]:12} {result.view_error_p99:8.4f} "
        f"{result.view_age_p99_s if result.view_age_p99_s is not None else '-':>7} {result.throttled:5}"
    )


async def run(args: argparse.Namespace, meter_url: str, baseline: ModuleType | None) -> list[Result]:
    sweep = [args.instances] if args.instances else [1, 5, 20, 50]
    results: list[Result] = []
    print(
        f"{'design':9} {'inst':>5} {'hosts':>5} {'calls/s':>9} {'per inst':>8} {'entities/s':>10} "
        f"{'per inst':>9} {'hottest':>9} {'partition':12} {'err p99':>8} {'age p99':>7} {'503s':>5}",
        flush=True,
    )
    for instances in sweep:
        result = await measure(
            "pulses", _factory(TableLedger), meter_url, instances, args.hosts, args.warmup, args.seconds, args.scale
        )
        results.append(result)
        print(_row(result), flush=True)
        if baseline is not None and instances <= args.baseline_max:
            # Main's rows pile up in minute partitions: its steady state needs two whole minutes (compressed).
            result = await measure(
                "main", _factory(baseline.TableLedger), meter_url, instances, args.hosts, 130.0, 40.0, 4.0
            )
            results.append(result)
            print(_row(result), flush=True)
    print("\nformula (steady state, per clock second), this design beside main's:")
    print(
        f"{'inst':>5} {'calls/s':>9} {'per inst':>8} {'entities/inst':>13} {'hottest':>8}   "
        f"main: {'per inst':>9} {'hottest':>10}"
    )
    for instances in sorted({*sweep, 100, 200, 1000}):
        f = formula(instances, args.hosts)
        print(
            f"{instances:5} {f['account_transactions_per_s']:9} {f['per_instance_transactions_per_s']:8} "
            f"{f['per_instance_entities_per_s']:13} {f['hottest_partition_entities_per_s']:8}   "
            f"      {f['baseline_per_instance_entities_per_s']:9} {f['baseline_hottest_partition_entities_per_s']:10}"
        )
    return results


def _factory(cls: Any) -> Any:
    return lambda client, clock, instance: cls(client, clock, instance)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=0, help="one run of this many (default: the sweep)")
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--warmup", type=float, default=65.0, help="clock seconds before measuring: a window")
    parser.add_argument("--seconds", type=float, default=30.0, help="clock seconds measured")
    parser.add_argument("--scale", type=float, default=2.0, help="clock speed: 2 runs a minute in 30 s")
    parser.add_argument("--baseline-max", type=int, default=5, help="largest instance count main's design runs at")
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args(argv)
    baseline = None if args.no_baseline else baseline_module()
    with tempfile.TemporaryDirectory() as workdir, Azurite(Path(workdir) / "azurite") as azurite:
        meter = subprocess.Popen(
            [PYTHON, "-m", "dev.table_meter", "--upstream", f"http://127.0.0.1:{azurite.port}"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert meter.stdout is not None
            meter_url = json.loads(meter.stdout.readline())["meter"]
            results = asyncio.run(run(args, meter_url, baseline))
        finally:
            meter.terminate()
            meter.wait()
    ours = [r for r in results if r.design == "pulses"]
    last: dict[str, Any] = {**asdict(ours[-1]), "formula": formula(ours[-1].instances, ours[-1].hosts)}
    last["sweep"] = [asdict(r) for r in results]
    print(json.dumps(last, separators=(",", ":")))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main(sys.argv[1:])
