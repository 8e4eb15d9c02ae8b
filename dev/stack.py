"""Start a whole local gateway: simulated regions, optionally Azurite, and N dev hosts, as processes.

Used by `python -m dev.run` (the README's run command), the end-to-end tests and the benchmarks, so
all three exercise the same real processes over loopback. Each process logs to a file in `workdir`.
With `credential="managed-identity"` the hosts sign in upstream with azure-identity's ManagedIdentityCredential
against the simulator's managed-identity endpoint (App Service protocol) instead of a static token.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CHAT = "gpt-4o"
EMBEDDINGS = "text-embedding-3-small"
STATIC_TOKEN = "local-simulator-token"  # simulated regions accept any bearer token
CREDENTIALS = ("static", "managed-identity")


@dataclass(frozen=True)
class RegionSpec:
    name: str
    tpm: int
    priority: int = 1
    embeddings_tpm: int = 350_000

    @property
    def physical(self) -> str:
        # Each region names its deployment differently, as real ones often do: the gateway maps it.
        return f"{CHAT}-{self.name}"


DEFAULT_REGIONS = (RegionSpec("eastus", 10_000), RegionSpec("westus", 20_000), RegionSpec("uksouth", 30_000))


def _wait_for_line(log: Path, pattern: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    regex = re.compile(pattern)
    while time.monotonic() < deadline:
        text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
        for line in text.splitlines():
            if regex.search(line):
                return line
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}:\n{text[-3000:]}")
        time.sleep(0.05)
    raise TimeoutError(f"{process.args!r} did not print {pattern!r} within {timeout}s; see {log}")


def _wait_until_warm(url: str, timeout: float = 30.0) -> None:
    """Until the instance has read the shared ledger once (its /readyz stops saying "warming"), as a platform
    routing by readiness would: before that it admits a small share only, and on compressed time its first
    real-time reads of storage last many simulated seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=5):
                return
        except urllib.error.HTTPError as exc:
            if json.load(exc).get("status") != "warming":
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} still warming after {timeout}s")
        time.sleep(0.02)


@dataclass
class Stack:
    workdir: Path
    regions: Sequence[RegionSpec] = DEFAULT_REGIONS
    time_scale: float = 1.0
    instances: int = 1
    table_connection_string: str | None = None
    routing: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    simulator_args: Sequence[str] = ()
    gateway_port: int = 0  # of the first instance; 0 picks a free port
    instance_env: Sequence[Mapping[str, str]] = ()  # per-instance overrides, by index
    # Per-instance replacement of `-m dev.host` (say, a benchmark's wrapper of it), by index.
    host_commands: Sequence[Sequence[str]] = ()
    client_key: str = field(default_factory=lambda: "gw-" + secrets.token_urlsafe(24))
    # More clients beside "local-dev": config entries ({"name", "limits", "priority", "admin", ...}); each gets a
    # key of its own, in `keys`. `local_dev` adds policy to "local-dev" itself; `extra_config` top-level fields.
    clients: Sequence[Mapping[str, Any]] = ()
    local_dev: Mapping[str, Any] = field(default_factory=dict)
    extra_config: Mapping[str, Any] = field(default_factory=dict)
    # More logical deployments beside the simulated regions' ones: name -> host entries of the config.
    extra_deployments: Mapping[str, Sequence[Mapping[str, Any]]] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict, init=False)
    credential: str = "static"  # or "managed-identity": the simulator's identity endpoint issues the tokens
    token_lifetime: float = 3600.0  # real seconds a managed-identity token lives
    identity_header: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    region_urls: dict[str, str] = field(default_factory=dict, init=False)
    control_url: str = field(default="", init=False)
    gateway_urls: list[str] = field(default_factory=list, init=False)
    _processes: list[subprocess.Popen[bytes]] = field(default_factory=list, init=False)
    _hosts: list[subprocess.Popen[bytes]] = field(default_factory=list, init=False)
    _simulator: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return self.gateway_urls[0]

    @property
    def host_pids(self) -> list[int]:
        """The gateway host processes, by instance index (for /proc/<pid>/status)."""
        return [process.pid for process in self._hosts]

    @property
    def simulator_pid(self) -> int:
        """The process that serves every simulated region."""
        assert self._simulator is not None
        return self._simulator.pid

    @property
    def identity_endpoint(self) -> str:
        return f"{self.control_url}/_sim/identity/token"

    def start(self) -> Stack:
        if self.credential not in CREDENTIALS:
            raise ValueError(f"credential must be one of {CREDENTIALS}, not {self.credential!r}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_simulator()
            config = self.workdir / "gateway.json"
            config.write_text(json.dumps(self.config(), indent=2), encoding="utf-8")
            for index in range(self.instances):
                self.gateway_urls.append(self._start_host(index, config))
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(
        self, args: list[str], log_name: str, env: Mapping[str, str] | None = None
    ) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.workdir / log_name
        handle = log.open("wb")
        process = subprocess.Popen(
            args, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        handle.close()
        self._processes.append(process)
        return process, log

    def _start_simulator(self) -> None:
        args = [PYTHON, "-m", "dev.simulator", "--time-scale", str(self.time_scale), "--port", "0"]
        # "=" form: a secret may start with "-", which argparse would take for an option
        args += [f"--identity-header={self.identity_header}", f"--token-lifetime={self.token_lifetime}"]
        args += self.simulator_args
        for region in self.regions:
            args += ["--region", f"{region.name}:{region.physical}={region.tpm},{EMBEDDINGS}={region.embeddings_tpm}"]
        process, log = self._spawn(args, "simulator.log")
        self._simulator = process
        line = _wait_for_line(log, r'^\{"regions"', process)
        announced = json.loads(line)
        self.region_urls = announced["regions"]
        self.control_url = announced.get("control", "")

    def config(self) -> dict[str, Any]:
        chat = [
            {
                "name": r.name,
                "endpoint": self.region_urls[r.name],
                "deployment": r.physical,
                "tpm": r.tpm,
                "priority": r.priority,
                "auth": {"type": "entra"},
            }
            for r in self.regions
        ]
        embeddings = [
            {"name": r.name, "endpoint": self.region_urls[r.name], "deployment": EMBEDDINGS, "tpm": r.embeddings_tpm}
            for r in self.regions
        ]
        self.keys = {"local-dev": self.client_key}
        clients = [{"name": "local-dev", "key_setting": "GATEWAY_KEY_LOCAL_DEV", **self.local_dev}]
        for client in self.clients:
            self.keys.setdefault(client["name"], "gw-" + secrets.token_urlsafe(24))
            clients.append({"key_setting": _key_setting(client["name"]), **client})
        return {
            "deployments": {CHAT: chat, EMBEDDINGS: embeddings, **self.extra_deployments},
            "clients": clients,
            "routing": dict(self.routing),
            **self.extra_config,
        }

    def host_env(self, index: int, config: Path) -> dict[str, str]:
        env = {
            "GATEWAY_CONFIG": str(config),
            "GATEWAY_CREDENTIAL": "static",
            "GATEWAY_STATIC_TOKEN": STATIC_TOKEN,
            "GATEWAY_TIME_SCALE": str(self.time_scale),
            "GATEWAY_KEY_LOCAL_DEV": self.client_key,
            **{_key_setting(name): key for name, key in self.keys.items() if name != "local-dev"},
            "GATEWAY_INSTANCE_ID": f"local-{index}",
            "HEALTH_PROBE_SCHEDULE": "*/5 * * * * *",
            "PYTHONUNBUFFERED": "1",
        }
        if self.credential == "managed-identity":
            del env["GATEWAY_STATIC_TOKEN"]
            env |= {
                "GATEWAY_CREDENTIAL": "managed-identity",
                "IDENTITY_ENDPOINT": self.identity_endpoint,
                "IDENTITY_HEADER": self.identity_header,
            }
        if self.table_connection_string:
            env["GATEWAY_TABLE_CONNECTION_STRING"] = self.table_connection_string
        per_instance = self.instance_env[index] if index < len(self.instance_env) else {}
        return {**env, **self.env, **per_instance}

    def _start_host(self, index: int, config: Path) -> str:
        port = self.gateway_port + index if self.gateway_port else 0
        command = self.host_commands[index] if index < len(self.host_commands) else ("-m", "dev.host")
        args = [
            PYTHON,
            *command,
            "--port",
            str(port),
            "--settings",
            str(self.workdir / "no-local-settings.json"),
        ]
        process, log = self._spawn(args, f"host-{index}.log", self.host_env(index, config))
        self._hosts.append(process)
        line = _wait_for_line(log, r"^Listening on http://", process)
        url = line.split("Listening on ", 1)[1].strip()
        if self.table_connection_string:
            _wait_until_warm(url)
        return url

    def status(self, index: int = 0, key: str | None = None) -> dict[str, Any]:
        request = urllib.request.Request(
            self.gateway_urls[index] + "/status",
            headers={"api-key": key or self.client_key, "accept": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            report: dict[str, Any] = json.load(response)
        return report

    def set_faults(self, region: str, **faults: object) -> None:
        _post(f"{self.control_url}/_sim/{region}/faults", faults)

    def set_latency(self, region: str, **latency: float) -> dict[str, Any]:
        """The region's latency model from now on: `ttft` and / or `per_token`, clock seconds."""
        return _post(f"{self.control_url}/_sim/{region}/latency", latency)

    def reset_regions(self) -> None:
        _post(f"{self.control_url}/_sim/reset", {})

    def region_stats(self, region: str) -> dict[str, Any]:
        """The region's snapshot: faults, deployments, calls per route, probe_calls, objects, created."""
        return _get(f"{self.control_url}/_sim/{region}/stats")

    def plant_file(self, region: str, size: int, purpose: str = "batch", filename: str | None = None) -> dict[str, Any]:
        """A file of `size` synthetic bytes in `region`, without uploading it; returns the file object."""
        body: dict[str, object] = {"kind": "file", "bytes": size, "purpose": purpose}
        if filename is not None:
            body["filename"] = filename
        return _post(f"{self.control_url}/_sim/{region}/objects", body)

    def set_identity_failing(self, failing: bool, status: int | None = None) -> dict[str, Any]:
        """Make the managed-identity endpoint fail (default 400: azure-identity raises at once) or recover."""
        body: dict[str, object] = {"failing": failing} if status is None else {"failing": failing, "status": status}
        return _post(f"{self.control_url}/_sim/identity", body)

    def identity_state(self) -> dict[str, Any]:
        """{"failing", "status", "lifetime", "token_requests"} of the managed-identity endpoint."""
        return _get(f"{self.control_url}/_sim/identity")

    def logs(self) -> str:
        return "\n".join(
            f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}" for log in sorted(self.workdir.glob("*.log"))
        )

    def stop(self) -> None:
        for process in reversed(self._processes):
            if process.poll() is None:
                process.terminate()
        for process in self._processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._processes.clear()
        self._hosts.clear()
        self._simulator = None


def _post(url: str, body: Mapping[str, object]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, Any] = json.load(response)
    return answer


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:
        answer: dict[str, Any] = json.load(response)
    return answer


def _key_setting(client: str) -> str:
    return "GATEWAY_KEY_" + "".join(ch if ch.isalnum() else "_" for ch in client.upper())
