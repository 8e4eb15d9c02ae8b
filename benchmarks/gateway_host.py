"""dev.host with two benchmark options: telemetry on without any exporter, and a cProfile of the whole process.

    python -m benchmarks.gateway_host [--telemetry memory] [--profile FILE] [dev.host's own options]

`--telemetry memory`: the gateway gets OpenTelemetry's SDK providers with no exporter (metrics aggregate in
memory, spans are made and dropped), so what is measured is the instrumentation itself. `--profile FILE`: the
process runs under cProfile and writes its stats to FILE when it stops (SIGTERM).
"""

from __future__ import annotations

import argparse
import cProfile
import signal
import sys
from pathlib import Path


def _memory_telemetry() -> None:
    """Make function_app.py's gateway one with in-memory telemetry (before function_app is imported)."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider

    from shared import gateway
    from shared.config import ConfigError, load_settings
    from shared.telemetry import Telemetry

    def from_environment() -> gateway.Gateway | gateway.Misconfigured:
        telemetry = Telemetry(MeterProvider(metric_readers=[InMemoryMetricReader()]), TracerProvider())
        try:
            return gateway.Gateway(load_settings(), telemetry=telemetry)
        except ConfigError as exc:
            return gateway.Misconfigured(exc)

    gateway.from_environment = from_environment


def main() -> None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--telemetry", choices=("off", "memory"), default="off")
    parser.add_argument("--profile", type=Path)
    own, rest = parser.parse_known_args()
    sys.argv = [sys.argv[0], *rest]
    if own.telemetry == "memory":
        _memory_telemetry()
    from dev import host

    if own.profile is None:
        host.main()
        return
    profiler = cProfile.Profile()

    def dump(*_: object) -> None:
        profiler.disable()
        profiler.dump_stats(own.profile)
        raise SystemExit(0)

    # uvicorn shuts down on SIGTERM, then raises the signal again for the handler it found: this one.
    signal.signal(signal.SIGTERM, dump)
    profiler.enable()
    host.main()
    dump()


if __name__ == "__main__":
    main()
