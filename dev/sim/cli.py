"""`python -m dev.simulator`: start the regions and the control server, print one JSON line, run until SIGTERM.

The line is `{"regions": {name: url, ...}, "control": url}` (dev/stack.py parses it). With --identity-header,
the control server's /_sim/identity/token is a managed-identity endpoint requiring that secret.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Sequence

from dev.sim.control import start_control
from dev.sim.identity import Identity
from dev.sim.limiter import SimDeployment
from dev.sim.region import run_regions
from shared.clock import ScaledClock


def parse_region(text: str) -> tuple[str, list[SimDeployment]]:
    """'eastus:gpt-4o=10000,text-embedding-3-small=50000' -> ("eastus", [deployments])."""
    name, sep, rest = text.partition(":")
    if not sep or not name or not rest:
        raise argparse.ArgumentTypeError(f"expected REGION:DEPLOYMENT=TPM[,...], got {text!r}")
    deployments = []
    for item in rest.split(","):
        deployment, sep, tpm = item.partition("=")
        if not sep or not deployment or not tpm.isdigit() or int(tpm) < 1:
            raise argparse.ArgumentTypeError(f"expected DEPLOYMENT=TPM (positive integer), got {item!r}")
        deployments.append(SimDeployment(deployment, int(tpm)))
    return name, deployments


def parse_ports(text: str) -> list[int]:
    try:
        return [int(port) for port in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ports, got {text!r}") from None


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dev.simulator", description="Simulated Azure OpenAI regions.")
    parser.add_argument(
        "--region",
        type=parse_region,
        action="append",
        required=True,
        help="REGION:DEPLOYMENT=TPM[,DEPLOYMENT=TPM...]; repeat per region",
    )
    parser.add_argument("--time-scale", type=float, default=1.0, help="clock speed-up (default 1)")
    parser.add_argument("--host", default="127.0.0.1")
    ports = parser.add_mutually_exclusive_group()
    ports.add_argument("--port", type=int, default=0, help="first region port, the rest follow; 0 = free ports")
    ports.add_argument("--ports", type=parse_ports, help="one fixed port per region, comma separated")
    parser.add_argument("--control-port", type=int, default=0, help="control server port; 0 = a free port")
    parser.add_argument("--ttft", type=float, default=0.3, help="clock seconds to the first token")
    parser.add_argument("--per-token", type=float, default=0.005, help="clock seconds per output token")
    parser.add_argument("--api-key", default=None, help="the only accepted api-key (default: any non-empty)")
    parser.add_argument(
        "--identity-header", default=None, help="the X-IDENTITY-HEADER secret of the managed-identity endpoint"
    )
    parser.add_argument(
        "--token-lifetime", type=_positive, default=3600.0, help="real seconds a managed-identity token lives"
    )
    return parser


async def serve(args: argparse.Namespace) -> None:
    specs: list[tuple[str, list[SimDeployment]]] = args.region
    ports = args.ports or ([args.port + i for i in range(len(specs))] if args.port else None)
    regions = await run_regions(
        specs,
        ScaledClock(args.time_scale),
        host=args.host,
        ports=ports,
        ttft=args.ttft,
        per_token=args.per_token,
        api_key=args.api_key,
    )
    identity = Identity(args.identity_header, args.token_lifetime)
    control, control_url = await start_control(regions, args.host, args.control_port, identity_endpoint=identity)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    print(json.dumps({"regions": {r.name: r.endpoint for r in regions}, "control": control_url}), flush=True)
    try:
        await stopping.wait()
    finally:
        await control.cleanup()
        for region in regions:
            await region.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.ports is not None and len(args.ports) != len(args.region):
        print(f"--ports lists {len(args.ports)} ports for {len(args.region)} regions", file=sys.stderr)
        return 2
    asyncio.run(serve(args))
    return 0
