"""Capacity of one gateway instance: CPU per proxied request and per streamed event, sustained requests per
second on one core, and memory per open stream, each beside baselines measured in the same run.

    python -m benchmarks.capacity [--requests 4000] [--streams 1000] [--rounds 5]
    python -m benchmarks.capacity --profile /tmp/gateway.prof   # where the gateway's CPU goes (cProfile)

Every process under test serves the same chat request against one simulated region that answers at once:

- region: the simulated region itself, called directly (its own CPU, for reference);
- aiohttp pass-through: a bare aiohttp proxy (benchmarks/passthrough.py): the least a Python proxy can do;
- starlette pass-through: the same bare proxy on the gateway's server stack (uvicorn, httptools, uvloop,
  Starlette), so the gap to the gateway is the gateway's own work;
- gateway: the dev host serving function_app.py (telemetry off, as without exporters configured);
- gateway + telemetry: the same with OpenTelemetry's SDK on and no exporter (instruments, spans made and dropped).

CPU is the process's own (utime + stime of every thread, /proc/<pid>/task/*/schedstat, in ns) over a counted
batch of requests, divided by the batch; nothing is subtracted. Rounds interleave the processes so that all see
the same machine, and medians are reported. CPU per event is the slope between streams of 1 and of
`--stream-tokens` tokens (events paced 1 ms apart, as a model paces them, so each arrives on its own).

Requests per second on one core: the process pinned to one CPU, the load generator and its upstream to the
other, closed loop at `--rps-concurrency`. The simulated region would run out first (it costs about as much as
a proxy), so here the proxies and gateways forward to benchmarks/canned.py, which replays one recorded answer of
the region at almost no cost; the region itself is measured directly. "core busy" is the share of the core the
process got (other work on a shared machine takes the rest); "req/CPU-second" is what a whole core would serve.

Memory per open stream: the process's VmRSS with `--streams` streams open (each has sent
its first event, the region holds the rest back) minus before, divided by their number; "KiB/more stream" is
the slope of VmRSS over the last two thirds of them (one-time growth and memory freed earlier left out).

The last line printed is one JSON object with every number.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import uvloop

from benchmarks.wire import Answer, Connection, Target, drive
from dev.stack import CHAT, PYTHON, ROOT, STATIC_TOKEN, RegionSpec, Stack

API = "api-version=2024-10-21"
CANNED = "canned"  # the gateway's logical deployment whose only host is the canned upstream
MESSAGES = [{"role": "user", "content": "How far is the moon?"}]
STREAM_PACE = 0.001  # seconds between a stream's events in the CPU-per-event phase
HOLD = 30.0  # seconds the region waits before a held stream's second token


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the processes under test -------------------------------------------------------------------------------
@dataclass
class Server:
    label: str
    key: str  # suffix of its numbers in the JSON line ("" for the gateway)
    pid: int
    target: Target
    rps_target: Target | None = None  # through the canned upstream (else `target`)
    rps_pid: int | None = None  # the process serving `rps_target` (else `pid`)
    results: dict[str, list[float]] = field(default_factory=dict)

    def add(self, metric: str, value: float) -> None:
        self.results.setdefault(metric, []).append(value)

    def median(self, metric: str) -> float | None:
        values = self.results.get(metric)
        return statistics.median(values) if values else None


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of `pid` (ns precision)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
    return total / 1e9


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def pin(pid: int, cpus: set[int]) -> None:
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError, FileNotFoundError, PermissionError):
            os.sched_setaffinity(int(task), cpus)


@contextlib.contextmanager
def spawned(module: Sequence[str], name: str, workdir: Path) -> Iterator[tuple[int, str]]:
    """A benchmark process that prints `Listening on URL`: (pid, url)."""
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as handle:
        process = subprocess.Popen([PYTHON, "-m", *module], cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while "Listening on " not in log_path.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.05)
        url = log_path.read_text().split("Listening on ", 1)[1].split()[0]
        yield process.pid, url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def passthrough(
    kind: str, upstream: str, workdir: Path, name: str
) -> contextlib.AbstractContextManager[tuple[int, str]]:
    return spawned(("benchmarks.passthrough", "--upstream", upstream, "--server", kind), name, workdir)


def record(url: str, headers: dict[str, str], body: dict[str, object]) -> bytes:
    """One answer of the region, as raw HTTP/1.1 bytes for the canned upstream to replay."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        content: bytes = response.read()
        fields = [(k, v) for k, v in response.getheaders() if k.lower() not in ("transfer-encoding", "connection")]
        status, reason = response.status, response.reason
    head = [f"HTTP/1.1 {status} {reason}"]
    head += [f"{k}: {v}" for k, v in fields if k.lower() != "content-length"] + [f"Content-Length: {len(content)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + content


def chat(stream: bool, max_tokens: int) -> dict[str, object]:
    return {"messages": MESSAGES, "max_tokens": max_tokens, "stream": stream}


# -- measurements -------------------------------------------------------------------------------------------
def _check(server: Server, answers: list[Answer]) -> None:
    bad = [a.status for a in answers if a.status != 200]
    if bad:
        raise SystemExit(f"{server.label} answered {len(bad)} of {len(answers)} requests with {sorted(set(bad))}")


async def cpu_per_request(
    server: Server, region_pid: int, body: dict[str, object], count: int, concurrency: int
) -> tuple[float, float]:
    """(CPU seconds of `server`, of the region) per request, over `count` requests."""
    request = server.target.post(body)
    before, region_before = cpu_seconds(server.pid), cpu_seconds(region_pid)
    answers = await drive(server.target, request, concurrency=concurrency, count=count)
    spent, region_spent = cpu_seconds(server.pid) - before, cpu_seconds(region_pid) - region_before
    _check(server, answers)
    return spent / len(answers), region_spent / len(answers)


def rotated(servers: Sequence[Server], round_: int) -> list[Server]:
    shift = round_ % len(servers)
    return [*servers[shift:], *servers[:shift]]


async def json_phase(servers: list[Server], region_pid: int, args: argparse.Namespace) -> None:
    per_round = max(1, args.requests // args.rounds)
    for round_ in range(args.rounds):
        for server in rotated(servers, round_):
            spent, region = await cpu_per_request(server, region_pid, chat(False, 16), per_round, args.concurrency)
            server.add("cpu_ms_per_request", spent * 1000)
            server.add("region_cpu_ms_per_request", region * 1000)
        log(
            f"  json round {round_ + 1}/{args.rounds}: "
            + ", ".join(f"{s.label} {s.results['cpu_ms_per_request'][-1]:.3f} ms" for s in servers)
        )


async def stream_phase(servers: list[Server], region_pid: int, args: argparse.Namespace) -> None:
    per_round = max(1, args.stream_requests // args.rounds)
    tokens = args.stream_tokens
    for round_ in range(args.rounds):
        for server in rotated(servers, round_):
            long, _ = await cpu_per_request(server, region_pid, chat(True, tokens), per_round, args.stream_concurrency)
            short, _ = await cpu_per_request(server, region_pid, chat(True, 1), per_round, args.stream_concurrency)
            server.add("cpu_us_per_event", (long - short) / (tokens - 1) * 1e6)
            server.add("cpu_ms_per_stream", short * 1000)
        log(
            f"  stream round {round_ + 1}/{args.rounds}: "
            + ", ".join(f"{s.label} {s.results['cpu_us_per_event'][-1]:.1f} us" for s in servers)
        )


async def rps_phase(servers: list[Server], canned_pid: int, args: argparse.Namespace) -> None:
    """Each process pinned to one CPU, the load generator and the upstream to the other, as fast as it goes."""
    cpus = os.sched_getaffinity(0)
    if len(cpus) < 2:
        log("  fewer than 2 CPUs: requests per second on one core skipped")
        return
    mine, theirs = min(cpus), max(cpus)
    body = chat(False, 16)
    try:
        for round_ in range(args.rps_rounds):
            for server in rotated(servers, round_):
                target, pid = server.rps_target or server.target, server.rps_pid or server.pid
                pin(os.getpid(), {mine})
                pin(canned_pid, {mine})
                pin(pid, {theirs})
                request = target.post(body)
                await drive(target, request, concurrency=args.rps_concurrency, seconds=0.3)  # settle
                started, before = time.perf_counter(), cpu_seconds(pid)
                answers = await drive(target, request, concurrency=args.rps_concurrency, seconds=args.rps_seconds)
                elapsed, spent = time.perf_counter() - started, cpu_seconds(pid) - before
                _check(server, answers)
                server.add("rps_one_core", len(answers) / elapsed)
                server.add("busy_one_core", spent / elapsed)
                server.add("rps_per_cpu_second", len(answers) / spent)
                for process in (os.getpid(), canned_pid, pid):
                    pin(process, cpus)
            log(
                f"  rps round {round_ + 1}/{args.rps_rounds}: "
                + ", ".join(
                    f"{s.label} {s.results['rps_one_core'][-1]:.0f}/s ({s.results['busy_one_core'][-1]:.0%} busy)"
                    for s in servers
                )
            )
    finally:
        for process in (os.getpid(), canned_pid, *(s.rps_pid or s.pid for s in servers)):
            pin(process, cpus)


async def open_streams(
    server: Server, count: int
) -> tuple[list[Connection], list[asyncio.Task[Answer]], list[tuple[int, int]]]:
    """`count` streams open on `server`, each past its first event, 100 at a time: the connections, their tasks
    and (streams open, VmRSS KiB) before and after each hundred."""
    request = server.target.post(chat(True, 2))
    samples = [(0, rss_kib(server.pid))]
    connections: list[Connection] = []
    tasks: list[asyncio.Task[Answer]] = []
    answers: list[Answer] = []
    for start in range(0, count, 100):
        batch = await asyncio.gather(*(Connection.open(server.target) for _ in range(min(100, count - start))))
        for connection in batch:
            answer = Answer()
            answers.append(answer)
            connections.append(connection)
            tasks.append(asyncio.create_task(connection.exchange(request, wait=HOLD * 3, answer=answer)))
        try:
            async with asyncio.timeout(30):
                await asyncio.gather(*(answer.started.wait() for answer in answers))
        except TimeoutError:
            raise SystemExit(f"{server.label}: not every stream started within 30 s") from None
        await asyncio.sleep(0.05)
        samples.append((len(answers), rss_kib(server.pid)))
    return connections, tasks, samples


def slope(points: list[tuple[int, int]]) -> float:
    """Least-squares KiB per stream."""
    xs, ys = [float(x) for x, _ in points], [float(y) for _, y in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


async def memory_phase(servers: list[Server], args: argparse.Namespace) -> None:
    for server in servers:
        connections, tasks, samples = await open_streams(server, args.streams)
        await asyncio.sleep(0.5)
        after = rss_kib(server.pid)
        finished = sum(task.done() for task in tasks)
        for connection in connections:
            connection.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if finished:
            raise SystemExit(f"{server.label}: {finished} streams ended before memory was measured")
        before = samples[0][1]
        server.add("kib_per_open_stream", (after - before) / args.streams)
        # The growth past the first streams (one-time pools, reuse of memory freed earlier) is the cost of one more.
        server.add("kib_per_more_stream", slope(samples[len(samples) // 3 :]))
        server.add("rss_mib_open_streams", after / 1024)
        log(
            f"  {server.label}: {before / 1024:.1f} MiB -> {after / 1024:.1f} MiB with {args.streams} open streams "
            f"({server.results['kib_per_more_stream'][-1]:.1f} KiB per stream past the first third)"
        )
        await asyncio.sleep(1.0)  # let it hang up upstream before the next one is measured


# -- the run ------------------------------------------------------------------------------------------------
def targets(stack: Stack, proxies: dict[str, str]) -> tuple[Target, dict[str, Target], list[Target]]:
    region = stack.regions[0]
    path = f"/openai/deployments/{region.physical}/chat/completions?{API}"
    bearer = {"Authorization": f"Bearer {STATIC_TOKEN}"}
    direct = Target.of(stack.region_urls[region.name] + path, bearer)
    through = {kind: Target.of(url + path, bearer) for kind, url in proxies.items()}
    gateway_path = f"/openai/deployments/{CHAT}/chat/completions?{API}"
    gateways = [Target.of(url + gateway_path, {"api-key": stack.client_key}) for url in stack.gateway_urls]
    return direct, through, gateways


async def measure(stack: Stack, servers: list[Server], canned_pid: int, args: argparse.Namespace) -> None:
    region_name, region_pid = stack.regions[0].name, stack.simulator_pid
    stack.set_latency(region_name, ttft=0.0, per_token=0.0)
    log("warming up...")
    for server in servers:
        await cpu_per_request(server, region_pid, chat(False, 16), 300, args.concurrency)
        await cpu_per_request(server, region_pid, chat(True, 20), 30, args.stream_concurrency)
    phases = set(args.phases.split(","))
    if "json" in phases:
        log(f"CPU per request: {args.requests} JSON requests per process, {args.concurrency} at a time")
        await json_phase(servers, region_pid, args)
    if "stream" in phases:
        stack.set_latency(region_name, per_token=STREAM_PACE)
        log(f"CPU per event: {args.stream_requests} streams of {args.stream_tokens} and of 1 token per process")
        await stream_phase(servers, region_pid, args)
        stack.set_latency(region_name, per_token=0.0)
    if "rps" in phases:
        log(f"requests per second on one core: {args.rps_seconds:g} s at {args.rps_concurrency} at a time")
        await rps_phase(servers, canned_pid, args)
    if "memory" in phases:
        stack.set_latency(region_name, per_token=HOLD)
        log(f"memory: {args.streams} streams held open per process")
        await memory_phase(servers, args)


METRICS = (
    ("cpu_ms_per_request", "CPU ms/request", 3),
    ("cpu_us_per_event", "CPU us/event", 1),
    ("cpu_ms_per_stream", "CPU ms/stream", 3),
    ("rps_one_core", "rps, one core", 0),
    ("busy_one_core", "core busy", 2),
    ("rps_per_cpu_second", "req/CPU-second", 0),
    ("kib_per_open_stream", "KiB/open stream", 1),
    ("kib_per_more_stream", "KiB/more stream", 1),
)


def report(servers: list[Server], args: argparse.Namespace) -> tuple[str, dict[str, float | int | None]]:
    lines = [
        f"capacity, medians of {args.rounds} rounds; one simulated region answering at once, loopback, "
        f"{os.cpu_count()} cores",
        f"JSON: {args.requests} chat requests per process, {args.concurrency} at a time; streams: "
        f"{args.stream_tokens} events {STREAM_PACE * 1000:g} ms apart; rps: pinned to one core, "
        f"{args.rps_concurrency} at a time; memory: {args.streams} streams open at once",
        "",
        f"{'process':<32}" + "".join(f"{title:>16}" for _, title, _ in METRICS),
    ]
    numbers: dict[str, float | int | None] = {}
    for server in servers:
        row = f"{server.label:<32}"
        for metric, _, digits in METRICS:
            value = server.median(metric)
            row += f"{'-' if value is None else f'{value:.{digits}f}':>16}"
            numbers[metric + server.key] = None if value is None else round(value, max(digits, 1) + 2)
        lines.append(row)
    region_ms = [v for s in servers for v in s.results.get("region_cpu_ms_per_request", [])]
    if region_ms:
        lines.append("")
        lines.append(f"the region's own CPU per request while serving them all: {statistics.median(region_ms):.3f} ms")
        numbers["region_cpu_ms_per_request_behind"] = round(statistics.median(region_ms), 5)
    return "\n".join(lines), numbers


def canned_gateway(stack: Stack, index: int) -> Target:
    path = f"/openai/deployments/{CANNED}/chat/completions?{API}"
    return Target.of(stack.gateway_urls[index] + path, {"api-key": stack.client_key})


def profile(workdir: Path, args: argparse.Namespace) -> None:
    """The gateway alone under cProfile, JSON and streamed load; its top functions by own and cumulative time."""
    out = Path(args.profile)
    regions = (RegionSpec("eastus", 100_000_000),)
    command: tuple[str, ...] = ("-m", "benchmarks.gateway_host", "--profile", str(out.resolve()))
    if args.profile_telemetry:
        command += ("--telemetry", "memory")
    with Stack(workdir, regions=regions, routing={"max_in_flight": 10_000}, host_commands=(command,)) as stack:
        _, _, [gateway] = targets(stack, {})
        server = Server("gateway", "", stack.host_pids[0], gateway)

        async def load() -> None:
            stack.set_latency("eastus", ttft=0.0, per_token=0.0)
            log(f"profiling: {args.requests} JSON requests, {args.stream_requests} streams of {args.stream_tokens}")
            if args.requests:
                await cpu_per_request(server, stack.simulator_pid, chat(False, 16), args.requests, args.concurrency)
            if args.stream_requests:
                stack.set_latency("eastus", per_token=STREAM_PACE)
                body = chat(True, args.stream_tokens)
                await cpu_per_request(server, stack.simulator_pid, body, args.stream_requests, args.stream_concurrency)

        uvloop.run(load())
    stats = pstats.Stats(str(out))
    print(by_package(stats))
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(40)


def by_package(stats: pstats.Stats) -> str:
    """Own time summed per module of the gateway and per third-party package: where the time goes."""
    totals: dict[str, float] = {}
    everything = 0.0
    for (filename, _, _), (_, _, own, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        path = filename.replace("\\", "/")
        if "/site-packages/" in path:
            name = path.split("/site-packages/", 1)[1].split("/", 1)[0]
        elif "/shared/" in path:
            name = "shared/" + path.rsplit("/", 1)[1]
        elif path.startswith("<") or path == "~":
            name = "builtins and C (socket writes, parsers, ...)"
        elif "/lib/python3" in path:
            name = "stdlib " + path.rsplit("/lib/python3", 1)[1].split("/", 2)[1].removesuffix(".py")
        else:
            name = path.rsplit("/", 2)[-2] + "/" + path.rsplit("/", 1)[1]
        totals[name] = totals.get(name, 0.0) + own
        everything += own
    lines = [f"own time by module or package ({everything:.2f} s in all, profiler overhead included):"]
    for name, seconds in sorted(totals.items(), key=lambda item: -item[1])[:30]:
        lines.append(f"  {seconds / everything:6.1%}  {seconds:7.3f} s  {name}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=4000, help="JSON requests per process (all rounds)")
    parser.add_argument("--concurrency", type=int, default=8, help="JSON requests at a time")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--stream-requests", type=int, default=100, help="streams per process and length")
    parser.add_argument("--stream-tokens", type=int, default=200, help="events of a long stream")
    parser.add_argument("--stream-concurrency", type=int, default=10)
    parser.add_argument("--rps-seconds", type=float, default=3.0)
    parser.add_argument("--rps-rounds", type=int, default=2)
    parser.add_argument("--rps-concurrency", type=int, default=32)
    parser.add_argument("--streams", type=int, default=1000, help="streams held open at once for memory")
    parser.add_argument("--phases", default="json,stream,rps,memory", help="which to run (comma-separated)")
    parser.add_argument("--only", help="measure only the processes whose label contains one of these (comma-separated)")
    parser.add_argument("--profile", metavar="FILE", help="profile the gateway alone instead, stats to FILE")
    parser.add_argument("--profile-telemetry", action="store_true", help="with --profile: telemetry on, in memory")
    args = parser.parse_args()
    regions = (RegionSpec("eastus", 100_000_000),)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if args.profile:
            profile(workdir, args)
            return
        log("starting a simulated region, a canned upstream, two gateways (telemetry off / in memory), bare proxies")
        telemetry = ("-m", "benchmarks.gateway_host", "--telemetry", "memory")
        with contextlib.ExitStack() as processes:
            canned_pid, canned_url = processes.enter_context(spawned(("benchmarks.canned",), "canned", workdir))
            canned_host = {"name": "canned", "endpoint": canned_url, "deployment": CANNED, "tpm": 100_000_000}
            stack = processes.enter_context(
                Stack(
                    workdir,
                    regions=regions,
                    instances=2,
                    routing={"max_in_flight": 10_000},
                    host_commands=(("-m", "dev.host"), telemetry),
                    extra_deployments={CANNED: [canned_host]},
                )
            )
            region_url = stack.region_urls["eastus"]
            proxies = {
                f"{kind}{suffix}": processes.enter_context(passthrough(kind, upstream, workdir, kind + suffix))
                for kind in ("aiohttp", "starlette")
                for suffix, upstream in (("", region_url), ("-canned", canned_url))
            }
            direct, through, gateways = targets(stack, {name: url for name, (_, url) in proxies.items()})
            answer = record(direct.url, {**direct.headers, "Content-Type": "application/json"}, chat(False, 16))
            urllib.request.urlopen(urllib.request.Request(canned_url + "/_canned", data=answer, method="POST"))
            servers = [
                Server("region (direct)", "_region", stack.simulator_pid, direct),
                Server(
                    "aiohttp pass-through",
                    "_baseline_proxy",
                    proxies["aiohttp"][0],
                    through["aiohttp"],
                    through["aiohttp-canned"],
                    proxies["aiohttp-canned"][0],
                ),
                Server(
                    "starlette pass-through",
                    "_baseline_starlette",
                    proxies["starlette"][0],
                    through["starlette"],
                    through["starlette-canned"],
                    proxies["starlette-canned"][0],
                ),
            ]
            for index, label, key in ((0, "gateway", ""), (1, "gateway + telemetry (in memory)", "_telemetry")):
                servers.append(
                    Server(label, key, stack.host_pids[index], gateways[index], canned_gateway(stack, index))
                )
            if args.only:
                servers = [s for s in servers if any(word in s.label for word in args.only.split(","))]
            uvloop.run(measure(stack, servers, canned_pid, args))
    table, numbers = report(servers, args)
    print(table)
    print(json.dumps(numbers))


if __name__ == "__main__":
    main()
