"""Simulated Azure OpenAI regions for local runs, end-to-end tests and benchmarks.

Each `SimRegion` (region.py) is one regional Azure OpenAI resource on its own loopback port. It mimics what the
gateway depends on (see azure-openai-facts.md): estimate-based admission against per-deployment TPM/RPM windows
(limiter.py, deployments.py), 429s with Retry-After and Azure-shaped errors (errors.py), SSE streams that end by
their own format (streams.py), stateful objects that live only in the region that made them (store.py and one
module per family, mounted table-driven by router.py), fault switches (faults.py) and per-route counters
(stats.py). A control server (control.py) flips faults, reads stats, plants objects and serves a managed-identity
endpoint (identity.py). All durations are clock seconds, so a `ScaledClock` compresses minutes into seconds.

`python -m dev.simulator` (cli.py) runs it; dev/simulator.py re-exports the public names.
"""
