"""Choosing the host for each attempt of one request: judged by its own size against every host, from
candidates the ledger and health describe, by the balancer's pick or a wait within the budget, and the error
to answer when no host can serve (saturated, failed, unhealthy, or the gateway's own fault).
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass, field

from shared import balancer
from shared.balancer import Candidate
from shared.clock import Clock
from shared.cluster import Host
from shared.config import Routing
from shared.errors import GatewayError
from shared.health import HealthBoard
from shared.inbound import Inbound
from shared.ledger import Ledger
from shared.placement import Plan
from shared.priority import Reserve

log = logging.getLogger("gateway")


@dataclass
class Attempts:
    """What the attempts of one request have learnt so far: for the next choice and for the final error."""

    tried: set[str] = field(default_factory=set)
    saw_429: bool = False
    failure: str = ""  # the last host failure, for the 502 message
    credential: str = ""  # the gateway's own identity failed (not any host's fault)


@dataclass(frozen=True)
class Admission:
    """What a caller's policy adds to every attempt: more windows to charge, a reserve to leave free."""

    client: str
    windows: tuple[str, ...] = ()
    reserve: float = 0.0  # fraction of each host's window a low-priority request must leave free
    since: float | None = None  # clock time the request started waiting (the wait budget counts from it)


class Selector:
    def __init__(
        self, *, routing: Routing, ledger: Ledger, health: HealthBoard, clock: Clock, rng: random.Random
    ) -> None:
        self._routing = routing
        self.ledger = ledger
        self._health = health
        self._clock = clock
        self._rng = rng
        self._reserve = Reserve(clock, routing.window_seconds)
        self._reserve_wait = routing.request_window_seconds / 20  # re-check the reserve this often while waiting

    def demand(self, plan: Plan, inbound: Inbound, admission: Admission) -> None:
        """A normal-priority request about to be sent: the reserve kept from low-priority ones follows demand."""
        if not admission.reserve:
            self._reserve.normal(plan.deployment or "", inbound.cost)

    def check_size(self, inbound: Inbound, plan: Plan) -> None:
        largest = max(host.tpm for host in plan.hosts)
        if inbound.cost > largest:
            raise GatewayError(
                400,
                "request_too_large",
                f"This request is estimated at {inbound.cost} tokens (prompt plus max_tokens times n), more than "
                f"the largest tokens-per-minute limit of any deployment that can serve it ({largest}): it could "
                "never be admitted. Lower max_tokens or shorten the prompt.",
            )

    async def choose(
        self,
        plan: Plan,
        inbound: Inbound,
        admission: Admission,
        attempts: Attempts,
        start: float,
        deadline: float,
    ) -> Host:
        """The session's host while it is eligible; else pick, or wait (within the budget) for one to recover."""
        preferred = plan.preferred
        if preferred is not None and preferred.key not in attempts.tried:
            candidate = self.candidate(preferred, inbound, admission.reserve)
            eligible = candidate.ready_in == 0.0 and candidate.fits and not candidate.probe_down
            if eligible and (
                not admission.reserve
                or self._above_reserve(
                    plan, inbound, admission, [self.candidate(h, inbound, admission.reserve) for h in plan.hosts]
                )
            ):
                return preferred
        while True:
            candidates = [
                self.candidate(h, inbound, admission.reserve) for h in plan.hosts if h.key not in attempts.tried
            ]
            if not candidates:
                raise self.exhausted(plan, inbound, admission, attempts)
            above = self._above_reserve(plan, inbound, admission, candidates)
            choice = balancer.pick(candidates, self._rng) if above else None
            if choice is not None:
                self._note_panic(plan)
                return choice.host
            wait = balancer.soonest(candidates) if above else self._reserve_wait
            if wait <= 0.0:
                # Room "now" that pick() refused: what holds it back is the reserve, which time alone frees.
                wait = self._reserve_wait
            budget_left = min(start + self._routing.wait_budget_seconds, deadline) - self._clock.now()
            if wait > budget_left:
                raise self.exhausted(plan, inbound, admission, attempts)
            await self._clock.sleep(wait)

    def _above_reserve(self, plan: Plan, inbound: Inbound, admission: Admission, candidates: list[Candidate]) -> bool:
        """Does a low-priority request fit above the reserve kept for the others (priority.py)? Judged over the
        deployment's hosts together, so that normal traffic squeezed off one host still finds room on another."""
        if not admission.reserve or not inbound.metered:
            return True
        ready = [c for c in candidates if c.ready_in == 0.0]
        free = sum(max(0.0, c.free_fraction) * c.host.tpm for c in ready)
        quota = sum(c.host.tpm for c in ready)
        return free - self._reserve.tokens(plan.deployment or "", quota, admission.reserve) >= inbound.cost

    def candidate(self, host: Host, inbound: Inbound, reserve: float = 0.0) -> Candidate:
        key = host.key
        probe_down = self._health.probe_down(key)
        if not inbound.metered:
            return Candidate(host, 1.0, True, 0.0, self._health.ready_in(key, None), probe_down)
        cost = inbound.cost
        free_tokens, free_requests = self.ledger.headroom(key, host.tpm, host.rpm)
        # A low-priority request leaves part of each host's request window too (its tokens: _above_reserve).
        reserve_requests = reserve * host.rpm * self._routing.request_window_seconds / 60.0
        fits = cost <= host.tpm and free_tokens >= cost and free_requests - reserve_requests >= 1
        if fits:
            fits_in = 0.0
        elif cost > host.tpm:
            fits_in = math.inf
        else:
            # Only a host without room needs the (costlier) time to recovery: keep the hot path short.
            fits_in = self.ledger.seconds_until(key, cost, host.tpm, host.rpm)
        return Candidate(
            host,
            free_tokens / host.tpm,
            fits,
            fits_in,
            self._health.ready_in(key, cost),
            probe_down,
        )

    def _note_panic(self, plan: Plan) -> None:
        """Panic mode: the active check fails on hosts holding most of the deployment's quota, and traffic goes to
        them anyway (whether live successes already vouch for some, or the balancer ignores the probes outright)."""
        if plan.home is not None or plan.deployment is None:
            return  # panic mode is about a deployment's hosts, not one object's home
        passing = sum(h.tpm for h in plan.hosts if not self._health.probe_failing(h.key))
        panic = balancer.below_panic_threshold(passing, sum(h.tpm for h in plan.hosts))
        if self._health.note_panic(plan.deployment, panic):
            if panic:
                log.warning(
                    "panic mode for %s: the active health check fails on hosts holding most of its quota; "
                    "routing to them anyway",
                    plan.deployment,
                )
            else:
                log.warning(
                    "panic mode for %s is over: most of its quota passes the health check again", plan.deployment
                )

    def exhausted(self, plan: Plan, inbound: Inbound, admission: Admission, attempts: Attempts) -> GatewayError:
        """The error when no host served: saturated (429), failed (502), none healthy (503), or our own fault."""
        candidates = [self.candidate(h, inbound, admission.reserve) for h in plan.hosts]
        recovery = balancer.soonest(candidates)
        if attempts.credential and not attempts.failure:
            return GatewayError(
                503,
                "UpstreamCredentialUnavailable",
                "The gateway cannot sign in to Azure OpenAI right now.",
                retry_after=1,
            )
        unready = all(c.ready_in > 0 or c.probe_down for c in candidates)
        if plan.home is not None and (attempts.failure or unready):
            # Down or cooling down: another region would only answer 404, so say where it lives and when to retry.
            return GatewayError(
                503,
                "RegionUnavailable",
                f"The {plan.home}, which is unavailable now; it cannot be served from another region. "
                "Retry after the time in Retry-After.",
                retry_after=self._retry_hint(recovery),
            )
        # Every host ejected (failing, not full) and no 429 seen: unhealthy, not saturated.
        ejected = all(self._health.ready_in(h.key, None) > 0 for h in plan.hosts) and not attempts.saw_429
        if recovery != math.inf and (attempts.saw_429 or not attempts.failure) and not ejected:
            wait = min(max(recovery, 0.001), self._routing.max_retry_after_seconds)
            return GatewayError(
                429,
                "429",
                "Every deployment behind this gateway is at its rate limit; retry after the time in Retry-After.",
                retry_after=wait,
            )
        if attempts.failure:
            return GatewayError(502, "BadGateway", f"The upstream deployments failed: {attempts.failure}.")
        return GatewayError(
            503, "ServiceUnavailable", "No healthy deployment is available.", retry_after=self._retry_hint(recovery)
        )

    def _retry_hint(self, recovery: float) -> float:
        cap = self._routing.max_retry_after_seconds
        return cap if recovery == math.inf else min(recovery, cap)
