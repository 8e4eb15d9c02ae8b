"""Where a request may go: the hosts of its deployment, the one resource that holds the objects it names,
or (for a new object that belongs to no deployment) any resource; and the host an opted-in session
prefers. Only an object's owner reaches it (ownership.py). Objects created on the way are recorded
here, so that later requests naming them go home, and a DELETE forgets them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from shared import ownership, references
from shared.affinity import AffinityStore, AffinityUnavailable, Home
from shared.auth import Caller
from shared.cluster import Cluster, Host
from shared.errors import GatewayError
from shared.health import HealthBoard
from shared.inbound import Inbound
from shared.routes import Route

log = logging.getLogger("gateway")


@dataclass(frozen=True)
class Plan:
    """Which hosts may serve a request, and which one it should go to while it can."""

    hosts: tuple[Host, ...]
    deployment: str | None = None  # the logical deployment: panic mode is judged per deployment
    home: str | None = None  # "file 'file-1' lives in region eastus": it may go nowhere else
    owner: str = ""  # whose objects the request reaches, and who owns what it creates
    session: str | None = None  # the affinity key of an opted-in session
    session_owner: str | None = None  # the host key the session was on
    preferred: Host | None = None  # the session's host, if it serves this deployment
    named: tuple[tuple[str, str, Home], ...] = ()  # (kind, id, home) of the objects the request names


class Unrecorded(Exception):
    """A request names an object the gateway has no record of: discovery.py may find it."""

    def __init__(self, kind: str, object_id: str) -> None:
        super().__init__(f"{kind} {object_id}")
        self.kind = kind
        self.object_id = object_id


class Placement:
    def __init__(self, cluster: Cluster, store: AffinityStore, health: HealthBoard, retry_after: float) -> None:
        self._cluster = cluster
        self._store = store
        self._health = health
        self._retry_after = retry_after
        self._hosts = {host.key: host for host in cluster.all_hosts()}

    async def plan(self, inbound: Inbound, caller: Caller) -> Plan:
        """A request naming objects goes to the resource that holds them; a session prefers its host."""
        route, logical = inbound.route, inbound.logical
        hosts = () if logical is None else self.deployment_hosts(logical)
        named = references.named(route, inbound.body, inbound.raw)
        if named:
            return await self._home(named, inbound, caller, hosts)
        if route.creates and logical is None:
            # A new object that belongs to no deployment (a file, a vector store): any resource may hold it.
            return Plan(self.resources(), owner=caller.owner)
        session = references.session_key(inbound.headers, caller.owner)
        if session is None:
            return Plan(hosts, logical, owner=caller.owner)
        try:
            home = await self._store.get(session)
        except AffinityUnavailable:
            home = None  # stickiness is a preference: balance as usual
        owner = home.host if home is not None else None
        preferred = next((h for h in hosts if h.key == owner), None)
        return Plan(hosts, logical, owner=caller.owner, session=session, session_owner=owner, preferred=preferred)

    def resources(self) -> tuple[Host, ...]:
        """One host per Azure OpenAI resource (endpoint), a healthy one where there is one."""
        by_endpoint: dict[str, Host] = {}
        for host in self._hosts.values():
            current = by_endpoint.get(host.endpoint)
            if current is None or (not self._health.available(current.key) and self._health.available(host.key)):
                by_endpoint[host.endpoint] = host
        return tuple(by_endpoint.values())

    def host(self, key: str) -> Host | None:
        return self._hosts.get(key)

    def deployment_hosts(self, logical: str) -> tuple[Host, ...]:
        hosts = self._cluster.hosts_for(logical)
        if hosts is None:
            raise GatewayError(
                404, "DeploymentNotFound", f"The API deployment {logical!r} does not exist on this gateway."
            )
        return hosts

    async def _home(
        self, named: list[tuple[str, str]], inbound: Inbound, caller: Caller, hosts: tuple[Host, ...]
    ) -> Plan:
        found: list[tuple[str, str, Home]] = []
        for kind, object_id in named:
            home = await self._locate(kind, object_id, inbound, caller)
            if home is not None:
                found.append((kind, object_id, home))
        if not found:  # only reasoning items nobody recorded: they pin nothing
            return Plan(hosts or self.resources(), inbound.logical, owner=caller.owner)
        owners = {self._hosts[home.host] for _, _, home in found}
        if len({h.endpoint for h in owners}) > 1:
            where = "; ".join(f"{kind} {oid!r} lives in {self._hosts[h.host].name}" for kind, oid, h in found)
            raise GatewayError(
                400,
                "objects_in_different_regions",
                f"This request names objects that live in different regions ({where}); one request can only be "
                "served by the resource that holds all of them.",
            )
        kind, object_id, first = found[0]
        home_host = self._hosts[first.host]
        logical = inbound.logical
        # An object lives in the resource (endpoint): any of its deployments can continue or read it.
        candidates = self._hosts.values() if logical is None else hosts
        at_home = tuple(h for h in candidates if h.endpoint == home_host.endpoint)
        if not at_home:
            raise GatewayError(
                400,
                "invalid_request",
                f"The {kind} {object_id!r} lives in region {home_host.name}, which does not serve {logical!r}.",
            )
        return Plan(
            at_home,
            logical,
            home=f"{kind} {object_id!r} lives in region {home_host.name}",
            owner=caller.owner,
            named=tuple(found),
        )

    async def _locate(self, kind: str, object_id: str, inbound: Inbound, caller: Caller) -> Home | None:
        """The object's home if the caller may reach it; a 404 (exactly as for an unknown id) if not."""
        key = references.object_key(kind, object_id)
        try:
            home = await self._store.get(key)
        except AffinityUnavailable:
            if not caller.admin:
                # The owner cannot be checked: say so, rather than hand the object to someone else.
                raise GatewayError(
                    503,
                    "AffinityUnavailable",
                    f"The gateway cannot look up which region holds this {kind} right now.",
                    retry_after=self._retry_after,
                ) from None
            home = None
        if home is not None and self._hosts.get(home.host) is None:
            home = None  # recorded for a host no longer configured
        if home is None:
            if kind == "reasoning":
                return None  # an item the gateway never saw: its resource will judge it
            raise Unrecorded(kind, object_id)
        if not ownership.may_reach(caller, home):
            raise ownership.not_found(kind, object_id)
        return home

    def adopt(self, kind: str, object_id: str, host: Host) -> None:
        """Record an object discovery found: where it lives is known now, whose it is cannot be."""
        self._store.put(references.object_key(kind, object_id), Home(host.key, None), references.ttl(kind))

    async def served(self, plan: Plan, route: Route, host: Host, payload: Any) -> None:
        """After a successful answer: record what it created, forget what it deleted, move a session."""
        await self.record(plan, route, host, payload)
        if route.deletes and plan.named:
            kind, object_id, home = plan.named[0]
            self._store.forget(references.object_key(kind, object_id), home)
        if plan.session is not None and host.key != plan.session_owner:
            self._store.put(plan.session, Home(host.key, plan.owner), references.SESSION_TTL)
            if plan.session_owner is not None:
                log.info("session %s moved from %s to %s", plan.session, plan.session_owner, host.key)

    async def record(self, plan: Plan, route: Route, host: Host, payload: Any) -> None:
        """Remember where the objects an answer (or a stream's event) tells of live, and whose they are: what a
        request creates is its caller's; what an answer tells of on the side of an object it reached (a finished
        batch's files) is that object's owner's, whoever reads it first (an admin reading it takes nothing)."""
        parent = plan.named[0] if plan.named else None
        owner = plan.owner if route.creates or parent is None else parent[2].owner
        for kind, object_id in references.created(route, payload):
            if parent is not None and (kind, object_id) == parent[:2]:
                continue  # the object the request went to (a run's thread): recorded already, its owner stays
            key = references.object_key(kind, object_id)
            if route.creates or not await self._known(key):
                self._store.put(key, Home(host.key, owner), references.ttl(kind))

    async def _known(self, key: str) -> bool:
        # A finished batch is read again and again: record its output files only the first time.
        try:
            return await self._store.get(key) is not None
        except AffinityUnavailable:
            return False
