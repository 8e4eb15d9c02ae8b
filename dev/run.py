"""Run the gateway locally over three simulated Azure OpenAI regions, until Ctrl-C.

./dev/run.sh            (installs what it needs, then runs this)
python -m dev.run [--port 7071] [--time-scale 1] [--key K]
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from types import FrameType
from urllib.parse import quote

from dev.azurite import Azurite
from dev.stack import CHAT, DEFAULT_REGIONS, ROOT, Stack

BANNER = """
Gateway: {url}   (instance logs: {workdir})
Regions (simulated, {scale}x time):
{regions}
Gateway key (api-key): {key}
Live status: {url}/status#key={fragment_key}

Try it with curl:
  curl -s '{url}/openai/deployments/{chat}/chat/completions?api-version=2024-10-21' \\
    -H 'api-key: {key}' -H 'content-type: application/json' \\
    -d '{{"messages": [{{"role": "user", "content": "Hello"}}], "max_tokens": 20}}'

Or with the official SDK, unchanged:
  from openai import AzureOpenAI
  client = AzureOpenAI(azure_endpoint="{url}", api_key="{key}", api_version="2024-10-21")
  print(client.chat.completions.create(model="{chat}", max_tokens=20,
        messages=[{{"role": "user", "content": "Hello"}}]).choices[0].message.content)

Per-region load and health:  curl -s {url}/status -H 'api-key: {key}'
Fault switches of a simulated region (README: "Simulated regions"):
  curl -s -X POST {control}/_sim/eastus/faults -H 'content-type: application/json' -d '{{"error_500": true}}'
Press Ctrl-C to stop.
"""


def gateway_key(value: str) -> str:
    """--key: it travels in an HTTP header and in the printed status URL, so printable ASCII without spaces."""
    if len(value) < 16 or not all("!" <= ch <= "~" for ch in value):
        raise argparse.ArgumentTypeError("a gateway key needs at least 16 printable ASCII characters, no whitespace")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=7071, help="the gateway's port on 127.0.0.1 (0 picks a free one)")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="run simulated time faster (e.g. 30); Retry-After and cooldowns are in simulated seconds",
    )
    parser.add_argument(
        "--key", type=gateway_key, help="the local gateway key (at least 16 characters); default: a new one each run"
    )
    args = parser.parse_args()
    fixed_key = {"client_key": args.key} if args.key else {}
    workdir = ROOT / ".dev"
    print("[1/3] starting Azurite (Table Storage, in memory) on loopback...", flush=True)
    storage = Azurite(workdir / "azurite").start()
    print("[2/3] starting three simulated regions...", flush=True)
    stack = Stack(
        workdir,
        time_scale=args.time_scale,
        gateway_port=args.port,
        table_connection_string=storage.connection_string,
        **fixed_key,
    )
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        stack.start()
        print(f"[3/3] gateway started (shared ledger in Azurite at 127.0.0.1:{storage.port})", flush=True)
        regions = "\n".join(
            f"  {r.name:<8} {stack.region_urls[r.name]}  deployment {r.physical:<16} {r.tpm:>7,} TPM"
            for r in DEFAULT_REGIONS
        )
        print(
            BANNER.format(
                url=stack.url,
                workdir=workdir,
                scale=args.time_scale,
                regions=regions,
                key=stack.client_key,
                fragment_key=quote(stack.client_key, safe=""),  # the page decodes it (URLSearchParams)
                control=stack.control_url,
                chat=CHAT,
            ),
            flush=True,
        )
        while not stopping:
            time.sleep(0.2)
    finally:
        print("stopping...", file=sys.stderr, flush=True)
        stack.stop()
        storage.stop()


if __name__ == "__main__":
    main()
