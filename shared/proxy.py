"""The router: one client request, from authentication to the last streamed byte.

Retries happen only before the first byte reaches the client, never on the same host twice, and
all inside one deadline. After that the response is relayed as it arrives: JSON bodies whole
(they come at once), event streams event by event.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from shared import affinity, balancer, listing, routes, usage
from shared.affinity import AffinityStore, AffinityUnavailable
from shared.auth import Authenticator, Caller
from shared.balancer import Candidate
from shared.clock import Clock
from shared.cluster import Cluster, Host
from shared.config import Routing, Secret
from shared.credentials import CredentialError, TokenProvider
from shared.errors import GatewayError, sse_error_event
from shared.health import HealthBoard, is_capacity_429, retry_after_seconds
from shared.ledger import Ledger, Reservation

log = logging.getLogger("gateway")

BodyReader = Callable[[int], Awaitable[bytes]]

# Client headers worth passing on; everything else (credentials, cookies, hop-by-hop, forwarding
# headers added by the Application Gateway) stays here. Azure passes at most 10 custom headers anyway.
_FORWARD_REQUEST = frozenset({"content-type", "accept", "user-agent", "x-ms-client-request-id", "openai-beta"})
_DROP_RESPONSE = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "content-encoding",
        "set-cookie",
    }
)
BACKEND_HEADER = "x-gateway-backend"
_MAX_FORWARDED_VALUE = 1024  # a longer user-agent or request id is noise that Azure may refuse
_MAX_HEADER_BYTES = 32 * 1024  # what Azure's own front end accepts in all
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass
class Outgoing:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None


@dataclass(frozen=True)
class _Plan:
    """Which hosts may serve a request, and which one it should go to while it can."""

    hosts: tuple[Host, ...]
    home: str | None = None  # "file 'file-1' lives in region eastus": it may go nowhere else
    session: str | None = None  # the affinity key of an opted-in session
    session_owner: str | None = None  # the host key the session was on
    preferred: Host | None = None  # the session's host, if it serves this deployment


@dataclass
class _Attempts:
    tried: set[str] = field(default_factory=set)
    saw_429: bool = False
    failure: str = ""


class Proxy:
    def __init__(
        self,
        *,
        cluster: Cluster,
        routing: Routing,
        ledger: Ledger,
        affinity: AffinityStore,
        health: HealthBoard,
        authenticator: Authenticator,
        tokens: TokenProvider,
        host_keys: Mapping[str, Secret],
        session: aiohttp.ClientSession,
        clock: Clock,
        rng: random.Random,
    ) -> None:
        self._cluster = cluster
        self._routing = routing
        self._ledger = ledger
        self._affinity = affinity
        self._hosts = {host.key: host for host in cluster.all_hosts()}
        self._health = health
        self._auth = authenticator
        self._tokens = tokens
        self._host_keys = host_keys
        self._session = session
        self._clock = clock
        self._rng = rng
        self.in_flight = 0

    async def handle(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        headers: Mapping[str, str],
        read_body: BodyReader,
    ) -> Outgoing:
        try:
            if sum(len(k) + len(v) for k, v in headers.items()) > _MAX_HEADER_BYTES:
                raise GatewayError(431, "request_header_fields_too_large", "The request headers are too large.")
            route = routes.match(method, path)
            caller = await self._auth.authenticate(headers)
            if self.in_flight >= self._routing.max_in_flight:
                # Envoy-style circuit breaking: a per-instance cap on concurrent upstream requests.
                raise GatewayError(503, "GatewayOverloaded", "The gateway is at its concurrency limit.", retry_after=1)
            raw = await read_body(self._routing.max_body_bytes)
            body = _parse_body(raw, headers.get("content-type", ""))
            return await self._forward(route, caller, query, headers, raw, body)
        except GatewayError as exc:
            return Outgoing(exc.status, exc.headers(), exc.body())

    async def _forward(
        self,
        route: routes.Route,
        caller: Caller,
        query: list[tuple[str, str]],
        headers: Mapping[str, str],
        raw: bytes,
        body: dict[str, Any] | None,
    ) -> Outgoing:
        if route.lists:
            return await self._list(route, caller, query, headers)
        logical = route.deployment or (_model(body) if route.by_model else None)
        plan = await self._plan(route, logical, headers, body)
        cost = usage.estimate_cost(route.operation, body, self._routing.max_tokens_default(logical or ""))
        api_version = dict(query).get("api-version")
        inject = bool(
            body
            and body.get("stream") is True
            and route.operation in ("chat/completions", "completions")
            and not usage.wants_stream_usage(body)
            and usage.supports_stream_usage(api_version)
        )
        start = self._clock.now()
        deadline = start + self._routing.deadline_seconds
        attempts = _Attempts()
        for attempt in range(min(self._routing.max_attempts, len(plan.hosts))):
            if attempt:
                await self._backoff(attempt, deadline)
            host = await self._choose(plan, cost, attempts, start, deadline)
            payload = _upstream_body(route, body, raw, host, inject)
            result = await self._attempt(route, caller, host, cost, query, headers, payload, inject, deadline, attempts)
            if result is not None:
                if plan.session is not None and result.status < 300 and host.key != plan.session_owner:
                    await self._move_session(plan, host)
                return result
        raise self._exhausted(plan, cost, attempts)

    async def _list(
        self, route: routes.Route, caller: Caller, query: list[tuple[str, str]], headers: Mapping[str, str]
    ) -> Outgoing:
        """Ask every resource at once for its first page and merge them; all regions or none.

        A list missing a region would look like lost files to the client, so a region that cannot answer
        fails the whole list with a 503 that names it. Hosts cooling down are asked all the same: a list
        costs no tokens, and only an answer tells whether the resource can give one.
        """
        limit = listing.page_limit(route.operation, query)
        resources = self._resources()
        deadline = self._clock.now() + self._routing.deadline_seconds
        tries = {host.key: _Attempts() for host in resources}
        answers = await asyncio.gather(
            *(
                self._attempt(route, caller, host, 0, query, headers, b"", False, deadline, tries[host.key])
                for host in resources
            ),
            return_exceptions=True,
        )
        pages: list[Mapping[str, Any]] = []
        failed: list[str] = []
        for host, answer in zip(resources, answers, strict=True):
            if isinstance(answer, BaseException) and not isinstance(answer, GatewayError):
                raise answer
            if isinstance(answer, Outgoing) and 400 <= answer.status < 500:
                return answer  # the client's own mistake (say, a bad filter): every region would say the same
            page = listing.parse_page(_json_or_none(answer.body)) if isinstance(answer, Outgoing) else None
            if page is None:
                failed.append(tries[host.key].failure or f"{host.name} did not answer with a list")
            else:
                pages.append(page)
        if failed:
            raise GatewayError(
                503,
                "RegionUnavailable",
                f"Cannot list {route.operation} across regions: {'; '.join(failed)}. A partial list would look "
                "as if objects were gone; retry after the time in Retry-After.",
                retry_after=self._routing.default_cooldown_seconds,
            )
        merged = json.dumps(listing.merge(pages, limit)).encode()
        names = ",".join(host.name for host in resources)
        return Outgoing(200, {"content-type": "application/json", BACKEND_HEADER: names}, body=merged)

    async def _plan(
        self, route: routes.Route, logical: str | None, headers: Mapping[str, str], body: dict[str, Any] | None
    ) -> _Plan:
        """A request naming an object goes to the resource that holds it; a session prefers its host."""
        named = affinity.named_object(route, body)
        hosts = () if logical is None else self._deployment_hosts(logical)
        if named is not None:
            return await self._home(*named, logical, hosts)
        if route.creates and logical is None:
            # A new file costs no tokens and belongs to no deployment: any resource may hold it.
            return _Plan(self._resources())
        session = affinity.session_key(headers)
        if session is None:
            return _Plan(hosts)
        try:
            owner = await self._affinity.get(session)
        except AffinityUnavailable:
            owner = None  # stickiness is a preference: balance as usual
        preferred = next((h for h in hosts if h.key == owner), None)
        return _Plan(hosts, session=session, session_owner=owner, preferred=preferred)

    def _resources(self) -> tuple[Host, ...]:
        """One host per Azure OpenAI resource (endpoint), a healthy one where there is one."""
        by_endpoint: dict[str, Host] = {}
        for host in self._hosts.values():
            current = by_endpoint.get(host.endpoint)
            if current is None or (
                self._health.recovers_in(current.key) > 0 and self._health.recovers_in(host.key) == 0
            ):
                by_endpoint[host.endpoint] = host
        return tuple(by_endpoint.values())

    def _deployment_hosts(self, logical: str) -> tuple[Host, ...]:
        hosts = self._cluster.hosts_for(logical)
        if hosts is None:
            raise GatewayError(
                404, "DeploymentNotFound", f"The API deployment {logical!r} does not exist on this gateway."
            )
        return hosts

    async def _home(self, kind: str, object_id: str, logical: str | None, hosts: tuple[Host, ...]) -> _Plan:
        try:
            owner_key = await self._affinity.get(affinity.object_key(kind, object_id))
        except AffinityUnavailable:
            raise GatewayError(
                503,
                "AffinityUnavailable",
                f"The gateway cannot look up which region holds this {kind} right now.",
                retry_after=self._routing.default_cooldown_seconds,
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
        return _Plan(home, home=f"{kind} {object_id!r} lives in region {owner.name}")

    async def _move_session(self, plan: _Plan, host: Host) -> None:
        assert plan.session is not None
        await self._affinity.put(plan.session, host.key, affinity.SESSION_TTL)
        if plan.session_owner is not None:
            log.info("session %s moved from %s to %s", plan.session, plan.session_owner, host.key)

    async def _record_created(self, payload: Any, host: Host, *, new: bool = True) -> bool:
        """Remember where a new object (and any file a batch wrote) lives; True once a new object is recorded."""
        for file_id in affinity.batch_output_files(payload):
            await self._record_once(affinity.object_key("file", file_id), host)
        created = affinity.created_object(payload) if new else None
        if created is None:
            return False
        kind, object_id = created
        await self._affinity.put(affinity.object_key(kind, object_id), host.key, affinity.OBJECT_TTL[kind])
        return True

    async def _record_once(self, key: str, host: Host) -> None:
        # A finished batch is read again and again: write its output files' records only the first time.
        try:
            if await self._affinity.get(key) is not None:
                return
        except AffinityUnavailable:
            pass
        await self._affinity.put(key, host.key, affinity.OBJECT_TTL["file"])

    async def _choose(self, plan: _Plan, cost: int, attempts: _Attempts, start: float, deadline: float) -> Host:
        """The session's host while it is eligible; else pick, or wait (within the budget) for one to recover."""
        preferred = plan.preferred
        if (
            preferred is not None
            and preferred.key not in attempts.tried
            and self._candidate(preferred, cost).eligible(cost)
        ):
            return preferred
        while True:
            candidates = [self._candidate(h, cost) for h in plan.hosts if h.key not in attempts.tried]
            chosen = balancer.pick(candidates, cost, self._rng)
            if chosen is not None:
                return chosen.host
            if not candidates:
                raise self._exhausted(plan, cost, attempts)
            wait = balancer.soonest(candidates)
            now = self._clock.now()
            budget_left = min(start + self._routing.wait_budget_seconds, deadline) - now
            if wait > budget_left:
                raise self._exhausted(plan, cost, attempts)
            await self._clock.sleep(wait)

    def _candidate(self, host: Host, cost: int) -> Candidate:
        free_tokens, free_requests = self._ledger.headroom(host.key, host.tpm, host.rpm)
        fits = free_tokens >= min(cost, host.tpm) and free_requests >= 1
        return Candidate(
            host=host,
            free_tokens=free_tokens,
            free_requests=free_requests,
            ready_in=self._health.recovers_in(host.key),
            # Only a host without room needs the (costlier) time to recovery: keep the hot path short.
            fits_in=0.0 if fits else self._ledger.seconds_until(host.key, cost, host.tpm, host.rpm),
        )

    def _exhausted(self, plan: _Plan, cost: int, attempts: _Attempts) -> GatewayError:
        """The error when no host served: saturated (429), failed (502) or none healthy (503)."""
        candidates = [self._candidate(h, cost) for h in plan.hosts]
        recovery = balancer.soonest(candidates)
        if plan.home is not None and (attempts.failure or all(c.ready_in > 0 for c in candidates)):
            # Down or cooling down: another region would only answer 404, so say where it lives and when to retry.
            return GatewayError(
                503,
                "RegionUnavailable",
                f"The {plan.home}, which is unavailable now; it cannot be served from another region. "
                "Retry after the time in Retry-After.",
                retry_after=self._retry_hint(recovery),
            )
        if recovery != float("inf") and (attempts.saw_429 or not attempts.failure):
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
        return cap if recovery == float("inf") else min(recovery, cap)

    async def _backoff(self, attempt: int, deadline: float) -> None:
        # Full jitter; the next try goes to another host, so this only spreads bursts of retries apart.
        delay = self._rng.uniform(0, self._routing.backoff_base_seconds * 2 ** (attempt - 1))
        await self._clock.sleep(min(delay, max(0.0, deadline - self._clock.now())))

    async def _attempt(
        self,
        route: routes.Route,
        caller: Caller,
        host: Host,
        cost: int,
        query: list[tuple[str, str]],
        client_headers: Mapping[str, str],
        payload: bytes,
        inject: bool,
        deadline: float,
        attempts: _Attempts,
    ) -> Outgoing | None:
        """One try on one host: an Outgoing to return, or None to try the next host."""
        attempts.tried.add(host.key)
        remaining = deadline - self._clock.now()
        if remaining <= 0:
            raise GatewayError(504, "GatewayTimeout", "The gateway's deadline passed before an upstream answered.")
        try:
            headers = await self._upstream_headers(host, client_headers)
        except CredentialError as exc:
            log.error("host %s: %s", host.key, exc)
            self._health.eject(host.key, "the gateway could not get an Entra ID token")
            attempts.failure = "the gateway could not authenticate upstream"
            return None
        url = host.endpoint + route.upstream_path(host.deployment)
        query_string = routes.upstream_query(query)
        if query_string:
            url += "?" + query_string
        reservation = self._ledger.reserve(host.key, cost, caller.name)
        self.in_flight += 1
        handed_off = False
        try:
            response = await asyncio.wait_for(
                # Never follow a redirect: it would carry the host's credential and the prompt elsewhere.
                self._session.request(
                    route.method,
                    url,
                    data=payload or None,
                    headers=headers,
                    timeout=self._timeout(),
                    allow_redirects=False,
                ),
                timeout=self._clock.to_real(remaining),
            )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            self.in_flight -= 1
            self._ledger.release(reservation)
            reason = "timed out" if isinstance(exc, asyncio.TimeoutError) else "connection failed"
            self._failed(host, attempts, reason)
            if deadline - self._clock.now() <= 0:
                raise GatewayError(
                    504, "GatewayTimeout", "No upstream answered within the gateway's deadline."
                ) from None
            return None
        try:
            self._ledger.observe(reservation, *_remaining(response.headers))
            outcome = await self._outcome(route, caller, host, response, reservation, inject, attempts, deadline)
            handed_off = outcome is not None and outcome.stream is not None
            return outcome
        finally:
            if not handed_off:
                self.in_flight -= 1
                response.release()

    async def _outcome(
        self,
        route: routes.Route,
        caller: Caller,
        host: Host,
        response: aiohttp.ClientResponse,
        reservation: Reservation,
        inject: bool,
        attempts: _Attempts,
        deadline: float,
    ) -> Outgoing | None:
        status = response.status
        headers = _client_headers(response.headers, host)
        creates = route.creates
        if status < 300 and response.content_type == "text/event-stream":
            self._health.record_success(host.key)
            return Outgoing(status, headers, stream=self._relay(host, response, reservation, inject, creates))
        try:
            content = await asyncio.wait_for(
                response.read(), timeout=self._clock.to_real(max(0.0, deadline - self._clock.now()))
            )
        except (TimeoutError, aiohttp.ClientError, OSError):
            # Nothing has reached the client yet, so another host may still answer. A 2xx was charged.
            if status < 300:
                self._ledger.settle(reservation, None)
            else:
                self._ledger.release(reservation)
            self._failed(host, attempts, "cut its answer off")
            return None
        if 300 <= status < 400:
            # Handing a redirect to the client would make its SDK re-send the caller's key there.
            self._ledger.release(reservation)
            log.warning("host %s answered a %d redirect; not followed", host.key, status)
            self._failed(host, attempts, f"answered a {status} redirect")
            return None
        if status in _RETRY_STATUSES or status in (401, 403) or (status == 404 and b"DeploymentNotFound" in content):
            self._ledger.release(reservation)
            self._retryable(host, status, response.headers, content, attempts)
            return None
        self._health.record_success(host.key)
        if status < 300:
            self._ledger.settle(reservation, usage.usage_from_json(content))
            if creates or route.kind == "batch":
                await self._record_created(_json_or_none(content), host, new=creates)
        else:
            self._ledger.release(reservation)  # a 4xx from the model (bad parameter, content filter): not run
        return Outgoing(status, headers, body=content)

    def _retryable(self, host: Host, status: int, headers: Mapping[str, str], body: bytes, attempts: _Attempts) -> None:
        if status == 429:
            attempts.saw_429 = True
            capacity = is_capacity_429(body)
            kind = "capacity" if capacity else "quota"
            seconds = None if capacity else retry_after_seconds(headers)
            used = self._health.cool_down(host.key, seconds, f"429 ({kind})")
            log.info("host %s answered 429 (%s); cooling down %.1fs", host.key, kind, used)
        elif status in (401, 403):
            reason = (
                f"upstream {status}: the gateway's identity lacks the 'Cognitive Services OpenAI User' role "
                "on this resource, or its api key is wrong"
            )
            log.error("host %s: %s", host.key, reason)
            self._health.eject(host.key, reason)
            attempts.failure = f"{host.name} refused the gateway's credentials"
        elif status == 404:
            reason = f"upstream 404: deployment {host.deployment!r} does not exist on {host.endpoint}"
            log.error("host %s: %s", host.key, reason)
            self._health.eject(host.key, reason)
            attempts.failure = f"{host.name} has no such deployment"
        else:
            self._failed(host, attempts, f"answered {status}")

    def _failed(self, host: Host, attempts: _Attempts, reason: str) -> None:
        attempts.failure = f"{host.name} {reason}"
        self._count_failure(host, reason)

    def _count_failure(self, host: Host, reason: str) -> None:
        if self._health.record_failure(host.key, reason):
            log.warning("host %s ejected: %s", host.key, reason)

    async def _relay(
        self, host: Host, response: aiohttp.ClientResponse, reservation: Reservation, inject: bool, creates: bool
    ) -> AsyncIterator[bytes]:
        """Event by event as they arrive; settle with the usage chunk; end with an error event if cut off.

        A new Response is recorded from its response.created event before that event reaches the client.
        """
        scanner = usage.SseScanner(strip_usage=inject)
        try:
            async for chunk in response.content.iter_any():
                for event in scanner.feed(chunk):
                    if creates and b"response.created" in event:
                        creates = not await self._record_created(usage.data_payload(event), host)
                    yield event
            rest = scanner.flush()
            if rest:
                yield rest
            if not scanner.done:
                raise aiohttp.ClientPayloadError("stream ended without [DONE]")
        except (TimeoutError, aiohttp.ClientError, OSError):
            self._count_failure(host, "dropped a stream")
            log.warning("host %s: stream interrupted after it had started", host.key)
            yield sse_error_event(
                "upstream_interrupted", "The upstream stream was interrupted; the answer is incomplete."
            )
        finally:
            self.in_flight -= 1
            response.release()
            self._ledger.settle(reservation, scanner.usage)

    def _timeout(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(
            total=None,
            connect=self._clock.to_real(self._routing.connect_timeout_seconds),
            sock_read=self._clock.to_real(self._routing.stream_idle_timeout_seconds),
        )

    async def _upstream_headers(self, host: Host, client_headers: Mapping[str, str]) -> dict[str, str]:
        headers = {k: v for k, v in client_headers.items() if k in _FORWARD_REQUEST and len(v) <= _MAX_FORWARDED_VALUE}
        headers["accept-encoding"] = "identity"  # usage is read from the body; keep it plain
        if host.auth.type == "api-key":
            headers["api-key"] = self._host_keys[host.key].reveal()
        else:
            headers["authorization"] = "Bearer " + await self._tokens.token()
        return headers


def _parse_body(raw: bytes, content_type: str) -> dict[str, Any] | None:
    """JSON bodies are parsed (for routing and cost); multipart and binary bodies pass as they are."""
    if not raw:  # a GET or DELETE, which the SDK still labels as JSON
        return None
    if "json" not in content_type and not (not content_type and raw[:1] == b"{"):
        return None
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise GatewayError(400, "invalid_json", "The request body is not valid JSON.") from None
    if not isinstance(doc, dict):
        raise GatewayError(400, "invalid_body", "The request body must be a JSON object.")
    return doc


def _json_or_none(content: bytes) -> Any:
    try:
        return json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None


def _model(body: dict[str, Any] | None) -> str:
    model = body.get("model") if body else None
    if not isinstance(model, str) or not routes.valid_deployment_name(model):
        raise GatewayError(400, "missing_model", "The v1 surface needs a JSON body whose 'model' names a deployment.")
    return model


def _upstream_body(route: routes.Route, body: dict[str, Any] | None, raw: bytes, host: Host, inject: bool) -> bytes:
    if body is None:
        return raw
    changes: dict[str, Any] = {}
    if route.by_model and body.get("model") != host.deployment:
        changes["model"] = host.deployment
    if inject:
        options = body.get("stream_options")
        changes["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    if not changes:
        return raw
    return json.dumps({**body, **changes}, separators=(",", ":")).encode()


def _remaining(headers: Mapping[str, str]) -> tuple[int | None, int | None]:
    return _int_header(headers, "x-ratelimit-remaining-tokens"), _int_header(headers, "x-ratelimit-remaining-requests")


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _client_headers(upstream: Mapping[str, str], host: Host) -> dict[str, str]:
    # Headers the upstream names in Connection are hop-by-hop too (RFC 9110, 7.6.1).
    named = {token.strip().lower() for token in upstream.get("connection", "").split(",")}
    headers = {k.lower(): v for k, v in upstream.items() if k.lower() not in _DROP_RESPONSE and k.lower() not in named}
    headers[BACKEND_HEADER] = host.name
    return headers
