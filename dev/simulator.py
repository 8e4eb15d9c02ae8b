"""Simulated Azure OpenAI regions: the entry point (`python -m dev.simulator`) and the public names.

The simulator itself is the dev.sim package (see its docstring).
"""

from __future__ import annotations

import sys

from dev.sim.cli import main, parse_ports, parse_region, serve
from dev.sim.control import control_app, start_control
from dev.sim.faults import Faults
from dev.sim.identity import Identity
from dev.sim.limiter import Limiter, SimDeployment, Throttle
from dev.sim.region import SimRegion, run_regions
from dev.sim.stats import DeploymentStats

__all__ = [
    "DeploymentStats",
    "Faults",
    "Identity",
    "Limiter",
    "SimDeployment",
    "SimRegion",
    "Throttle",
    "control_app",
    "main",
    "parse_ports",
    "parse_region",
    "run_regions",
    "serve",
    "start_control",
]

if __name__ == "__main__":
    sys.exit(main())
