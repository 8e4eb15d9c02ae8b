"""Where a request may go: the hosts of its deployment, the one resource that holds an object it names,
or (for a new object that belongs to no deployment) any resource; and the host an opted-in session
prefers. Objects created on the way are recorded here, so that later requests naming them go home.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from shared import affinity
from shared.affinity import AffinityStore, AffinityUnavailable
from shared.cluster import Cluster, Host
from shared.errors import GatewayError
from shared.health import HealthBoard
from shared.inbound import Inbound

log = logging.getLogger("gateway")


@dataclass(frozen=True)
class Plan:
    """Which hosts may serve a request, and which one it should go to while it can."""

    hosts: tuple[Host, ...]
    deployment: str | None = None  # the logical deployment: panic mode is judged per deployment
    home: str | None = None  # "file 'file-1' lives in region eastus": it may go nowhere else
    session: str | None = None  # the affinity key of an opted-in session
    session_owner: str | None = None  # the host key the session was on
    preferred: Host | None = None  # the session's host, if it serves this deployment


class Placement:
    def __init__(self, cluster: Cluster, store: AffinityStore, health: HealthBoard, retry_after: float) -> None:
        self._cluster = cluster
        self._store = store
        self._health = health
        self._retry_after = retry_after
        self._hosts = {host.key: host for host in cluster.all_hosts()}

    async def plan(self, inbound: Inbound) -> Plan:
        """A request naming an object goes to the resource that holds it; a session prefers its host."""
        route, logical = inbound.route, inbound.logical
        named = affinity.named_object(route, inbound.body)
        hosts = () if logical is None else self.deployment_hosts(logical)
        if named is not None:
            return await self._home(*named, logical, hosts)
        if route.creates and logical is None:
            # A new file costs no tokens and belongs to no deployment: any resource may hold it.
            return Plan(self.resources())
        session = affinity.session_key(inbound.headers)
        if session is None:
            return Plan(hosts, logical)
        try:
            owner = await self._store.get(session)
        except AffinityUnavailable:
            owner = None  # stickiness is a preference: balance as usual
        preferred = next((h for h in hosts if h.key == owner), None)
        return Plan(hosts, logical, session=session, session_owner=owner, preferred=preferred)

    def resources(self) -> tuple[Host, ...]:
        """One host per Azure OpenAI resource (endpoint), a healthy one where there is one."""
        by_endpoint: dict[str, Host] = {}
        for host in self._hosts.values():
            current = by_endpoint.get(host.endpoint)
            if current is None or (not self._health.available(current.key) and self._health.available(host.key)):
                by_endpoint[host.endpoint] = host
        return tuple(by_endpoint.values())

    def deployment_hosts(self, logical: str) -> tuple[Host, ...]:
        hosts = self._cluster.hosts_for(logical)
        if hosts is None:
            raise GatewayError(
                404, "DeploymentNotFound", f"The API deployment {logical!r} does not exist on this gateway."
            )
        return hosts

    async def _home(self, kind: str, object_id: str, logical: str | None, hosts: tuple[Host, ...]) -> Plan:
        try:
            owner_key = await self._store.get(affinity.object_key(kind, object_id))
        except AffinityUnavailable:
            raise GatewayError(
                503,
                "AffinityUnavailable",
                f"The gateway cannot look up which region holds this {kind} right now.",
                retry_after=self._retry_after,
            ) from None
        owner = self._hosts.get(owner_key) if owner_key else None
        if owner is None:
            raise GatewayError(404, "not_found", f"No {kind} found with id {object_id!r}.")
        # The object lives in the resource (endpoint): any of its deployments can continue or read it.
        home = tuple(h for h in (self._hosts.values() if logical is None else hosts) if h.endpoint == owner.endpoint)
        if not home:
            raise GatewayError(
                400,
                "invalid_request",
                f"The {kind} {object_id!r} lives in region {owner.name}, which does not serve {logical!r}.",
            )
        return Plan(home, logical, home=f"{kind} {object_id!r} lives in region {owner.name}")

    async def moved(self, plan: Plan, host: Host) -> None:
        """A session served elsewhere than its host moves there (once, logged)."""
        if plan.session is None or host.key == plan.session_owner:
            return
        await self._store.put(plan.session, host.key, affinity.SESSION_TTL)
        if plan.session_owner is not None:
            log.info("session %s moved from %s to %s", plan.session, plan.session_owner, host.key)

    async def record_created(self, payload: Any, host: Host, *, new: bool = True) -> bool:
        """Remember where a new object (and any file a batch wrote) lives; True once a new object is recorded."""
        for file_id in affinity.batch_output_files(payload):
            await self._record_once(affinity.object_key("file", file_id), host)
        created = affinity.created_object(payload) if new else None
        if created is None:
            return False
        kind, object_id = created
        await self._store.put(affinity.object_key(kind, object_id), host.key, affinity.OBJECT_TTL[kind])
        return True

    async def _record_once(self, key: str, host: Host) -> None:
        # A finished batch is read again and again: write its output files' records only the first time.
        try:
            if await self._store.get(key) is not None:
                return
        except AffinityUnavailable:
            pass
        await self._store.put(key, host.key, affinity.OBJECT_TTL["file"])
