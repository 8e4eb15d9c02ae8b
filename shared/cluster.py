"""Hosts (one deployment on one regional resource) and the logical deployments they serve."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

AuthType = Literal["entra", "api-key"]


@dataclass(frozen=True)
class HostAuth:
    type: AuthType
    # Name of the app setting (or Key Vault secret) holding the key, for api-key hosts only.
    setting: str | None = None


@dataclass(frozen=True)
class ProbeSpec:
    """The active health check's request: a GET that spends no tokens (the resource's model list by default)."""

    path: str = "/openai/models"
    api_version: str | None = "2024-10-21"

    def url(self, endpoint: str) -> str:
        return endpoint + self.path + (f"?api-version={self.api_version}" if self.api_version else "")


@dataclass(frozen=True)
class Host:
    """One physical deployment: the unit that has a quota, a health and a cooldown."""

    name: str  # usually the region; shown to clients in x-gateway-backend
    endpoint: str  # https://<resource>.openai.azure.com, no trailing slash
    deployment: str  # the physical deployment name on that resource
    tpm: int
    rpm: int
    priority: int = 1  # lower is preferred: PTU first, pay-as-you-go as spill-over
    weight: float = 1.0
    auth: HostAuth = field(default_factory=lambda: HostAuth("entra"))
    probe: ProbeSpec = field(default_factory=ProbeSpec)

    @functools.cached_property
    def key(self) -> str:
        """Identity for ledger, health and cooldowns: a resource may serve several deployments."""
        return f"{self.name}/{self.deployment}"


@dataclass(frozen=True)
class Cluster:
    """Logical deployment name (what clients ask for) -> the hosts that serve it."""

    deployments: Mapping[str, tuple[Host, ...]]

    def hosts_for(self, logical: str) -> tuple[Host, ...] | None:
        return self.deployments.get(logical)

    def all_hosts(self) -> tuple[Host, ...]:
        seen: dict[str, Host] = {}
        for hosts in self.deployments.values():
            for host in hosts:
                seen.setdefault(host.key, host)
        return tuple(seen.values())
