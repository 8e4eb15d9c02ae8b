"""`python -m dev.simulator`: arguments and the one JSON line stack.py parses."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from dev.simulator import SimDeployment, parse_region
from tests.dev.sim.conftest import VERSION, post

ROOT = Path(__file__).resolve().parents[3]


def test_region_spec_parsing() -> None:
    name, deployments = parse_region("eastus:gpt-4o=10000,text-embedding-3-small=50000")
    assert name == "eastus"
    assert deployments == [SimDeployment("gpt-4o", 10_000), SimDeployment("text-embedding-3-small", 50_000)]
    for bad in ("eastus", "eastus:gpt-4o", "eastus:gpt-4o=ten", ":gpt-4o=1"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_region(bad)


@pytest.mark.asyncio
async def test_cli_prints_one_json_line_and_exits_cleanly_on_sigterm(session: aiohttp.ClientSession) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dev.simulator",
        "--region",
        "eastus:gpt-4o=10000",
        "--region",
        "westus:gpt-4o=20000,emb=50000",
        "--time-scale",
        "30",
        "--port",
        "0",
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(await asyncio.wait_for(proc.stdout.readline(), timeout=10))
        assert set(info) == {"regions", "control"}
        assert set(info["regions"]) == {"eastus", "westus"}
        west = info["regions"]["westus"]
        status, headers, _ = await post(
            session, f"{west}/openai/deployments/emb/embeddings?api-version={VERSION}", {"input": "hello"}
        )
        assert (status, headers["x-ms-region"]) == (200, "westus")
        async with session.get(info["control"] + "/_sim/westus/stats") as resp:
            assert (await resp.json())["deployments"]["emb"]["admitted_requests"] == 1
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        rest, errors = await asyncio.wait_for(proc.communicate(), timeout=10)
    assert proc.returncode == 0, errors.decode()
    assert rest == b""  # exactly one line on stdout
