"""Sending one request to a host, and to another when that one fails, all inside one deadline.

Retries happen only before the first byte reaches the client, never on the same host twice, and
only where outcome.py says it is safe. What each attempt holds (a place among the in-flight
requests, a reservation, the upstream response) is given back on every exit path, cancellation
included: the client hanging up cancels the task at whatever it awaits.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Mapping
from typing import Any

import aiohttp

from shared import relay, usage
from shared.clock import Clock
from shared.cluster import Host
from shared.config import Routing
from shared.errors import GatewayError
from shared.health import HealthBoard
from shared.inbound import Inbound
from shared.ledger import Ledger, Reservation, TokenUsage
from shared.outcome import Breakage, Verdict, counts_against_host, judge, retryable, upstream_charged
from shared.outgoing import Outgoing, client_headers
from shared.placement import Placement, Plan
from shared.record import RequestRecord
from shared.selection import Admission, Attempts, Selector
from shared.telemetry import Telemetry
from shared.upstream import Broken, CredentialUnavailable, Upstream

log = logging.getLogger("gateway")

ERROR_BODY_CAP = 64 * 1024  # an error answer is judged on its first bytes; a longer one is relayed
_RECORDED_EVENTS = (b"response.created", b"response.completed", b"thread.created", b"thread.run.created")


class _Hold:
    """What one attempt holds; `close` gives back whatever is left, exactly once. A relayed body ends here too
    (its Relay calls `stream_ended` or `body_ended`: methods, not closures, as an open stream holds them)."""

    __slots__ = ("_closed", "_dispatcher", "host", "record", "reservation", "response", "span")

    def __init__(
        self, dispatcher: Dispatcher, host: Host, record: RequestRecord, reservation: Reservation | None, span: Any
    ) -> None:
        self._dispatcher = dispatcher
        self.host = host
        self.record = record
        self.reservation = reservation
        self.span = span  # the attempt's trace span, when telemetry is on
        self.response: aiohttp.ClientResponse | None = None
        self._closed = False
        dispatcher.in_flight += 1

    def settle(self, used: TokenUsage | None) -> None:
        if self.reservation is not None:
            self._dispatcher.ledger.settle(self.reservation, used)

    def release(self) -> None:
        if self.reservation is not None:
            self._dispatcher.ledger.release(self.reservation)

    def close(self, reusable: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        self._dispatcher.in_flight -= 1
        if self.response is not None:
            # A connection with unread bytes (a body left half-way) must not go back to the pool.
            (self.response.release if reusable else self.response.close)()
        if self.reservation is not None and self.reservation.state == "open":
            # Interrupted once under way: the request may have reached the host, which charged it on admission.
            self.settle(None)
        if self.span is not None:  # interrupted before its outcome was known (the client left, a shutdown)
            self._dispatcher.attempted(self, "abandoned", None)

    def stream_ended(self, scanner: usage.SseScanner | None, ending: str) -> None:
        """An event stream is over: settled with its usage; a stream the host dropped counts against it."""
        assert scanner is not None
        record = self.record
        record.ending = ending
        used = scanner.usage
        record.response_model = scanner.model
        if used is not None:
            record.input_tokens, record.output_tokens = used.prompt, used.completion
        if ending == "cut_off":
            self._dispatcher._count_failure(self.host, "dropped a stream")
            log.warning("host %s: stream interrupted after it had started", self.host.key)
        self.settle(used)
        self.close(reusable=ending == "complete")

    def body_ended(self, scanner: usage.SseScanner | None, ending: str) -> None:
        """A large or binary body passed through is over."""
        self.record.ending = ending
        self.settle(None)
        self.close(reusable=ending == "complete")


class Dispatcher:
    def __init__(
        self,
        *,
        routing: Routing,
        ledger: Ledger,
        health: HealthBoard,
        upstream: Upstream,
        placement: Placement,
        selector: Selector,
        clock: Clock,
        rng: random.Random,
        telemetry: Telemetry,
    ) -> None:
        self.routing = routing
        self._selector = selector
        self._telemetry = telemetry
        self.ledger = ledger
        self._health = health
        self._upstream = upstream
        self._placement = placement
        self._clock = clock
        self._rng = rng
        self.in_flight = 0
        self._idle = relay.IdleTimeouts(clock.to_real(routing.stream_idle_timeout_seconds))

    async def dispatch(self, inbound: Inbound, plan: Plan, admission: Admission, record: RequestRecord) -> Outgoing:
        if inbound.metered:
            self._selector.check_size(inbound, plan)
        start = self._clock.now() if admission.since is None else admission.since
        deadline = start + self.routing.deadline_seconds
        attempts = Attempts()
        for attempt in range(min(self.routing.max_attempts, len(plan.hosts))):
            if attempt:
                if record.attempts:
                    self._telemetry.retried(record.attempts[-1].host, record.attempts[-1].outcome)
                await self._backoff(attempt, deadline)
            host = await self._selector.choose(plan, inbound, admission, attempts, start, deadline)
            result = await self._attempt(host, inbound, plan, admission, attempts, deadline, record)
            if result is not None:
                record.host, record.host_endpoint = host.name, host.endpoint
                return result
        raise self._selector.exhausted(plan, inbound, admission, attempts)

    async def ask(self, host: Host, inbound: Inbound, record: RequestRecord) -> tuple[Outgoing | None, str]:
        """One attempt on one given host, no retry (a fan-out to every resource): its answer, or why none."""
        attempts = Attempts()
        deadline = self._clock.now() + self.routing.deadline_seconds
        try:
            answer = await self._attempt(
                host, inbound, Plan((host,)), Admission(record.client), attempts, deadline, record
            )
        except GatewayError as exc:
            return None, exc.message
        return answer, attempts.failure or attempts.credential

    async def _backoff(self, attempt: int, deadline: float) -> None:
        # Full jitter; the next try goes to another host, so this only spreads bursts of retries apart.
        delay = self._rng.uniform(0, self.routing.backoff_base_seconds * 2 ** (attempt - 1))
        await self._clock.sleep(min(delay, max(0.0, deadline - self._clock.now())))

    # -- one attempt ------------------------------------------------------------------------------
    async def _attempt(
        self,
        host: Host,
        inbound: Inbound,
        plan: Plan,
        admission: Admission,
        attempts: Attempts,
        deadline: float,
        record: RequestRecord,
    ) -> Outgoing | None:
        """One try on one host: an Outgoing to return, or None to try the next host."""
        attempts.tried.add(host.key)
        remaining = deadline - self._clock.now()
        if remaining <= 0:
            raise GatewayError(504, "GatewayTimeout", "The gateway's deadline passed before an upstream answered.")
        began = record.timer()
        try:
            headers = await self._upstream.headers(host, inbound.headers)
        except CredentialUnavailable as exc:
            # The gateway's own failure: no host is blamed, none is ejected.
            attempts.credential = str(exc)
            record.attempt(host.name, "credential_unavailable", began)
            log.error("upstream credential unavailable: %s", exc)
            return None
        span = self._telemetry.attempt(record, host, headers)
        reservation = None
        if inbound.metered:
            self._selector.demand(plan, inbound, admission)
            reservation = self.ledger.reserve(
                (host.key, *admission.windows),
                inbound.cost,
                prompt=inbound.prompt,
                client=admission.client,
                deployment=inbound.logical or "",
            )
        hold = _Hold(self, host, record, reservation, span)
        handed_off = False
        try:
            try:
                hold.response = await self._upstream.send(
                    host,
                    inbound.route,
                    inbound.query,
                    headers,
                    _payload(inbound, host),
                    header_timeout=min(self.routing.response_header_timeout_seconds, remaining),
                )
            except Broken as exc:
                self._tried(record, hold, host, exc.breakage.value, began)
                self._broken(host, exc.breakage, exc.detail, hold, inbound, attempts, deadline)
                return None
            outgoing = await self._answer(host, inbound, plan, hold, attempts, deadline, record, began)
            handed_off = outgoing is not None and outgoing.stream is not None
            return outgoing
        finally:
            if not handed_off:
                hold.close(reusable=True)

    def _tried(
        self, record: RequestRecord, hold: _Hold, host: Host, outcome: str, began: float, status: int | None = None
    ) -> None:
        record.attempt(host.name, outcome, began, status)
        self.attempted(hold, outcome, status)

    def attempted(self, hold: _Hold, outcome: str, status: int | None) -> None:
        """The attempt's span ends once, with its outcome."""
        span, hold.span = hold.span, None
        self._telemetry.attempted(span, outcome, status)

    def _broken(
        self,
        host: Host,
        breakage: Breakage,
        detail: str,
        hold: _Hold,
        inbound: Inbound,
        attempts: Attempts,
        deadline: float,
    ) -> None:
        (hold.settle(None) if upstream_charged(breakage) else hold.release())
        if hold.response is not None:
            hold.response.close()
            hold.response = None
        attempts.failure = f"{host.name} {detail}"
        self._count_failure(host, detail)
        # Whether it may have run comes first: a create timed out at the deadline must still say "check first".
        if not retryable(breakage, creates=inbound.route.creates):
            raise GatewayError(
                502,
                "upstream_outcome_unknown",
                f"{host.name} {detail} once the request was sent, so it may have "
                + ("created the object" if inbound.route.creates else "acted on it")
                + "; the gateway does not send it again elsewhere. Check before retrying.",
            )
        if deadline - self._clock.now() <= 0:
            raise GatewayError(504, "GatewayTimeout", "No upstream answered within the gateway's deadline.")

    async def _answer(
        self,
        host: Host,
        inbound: Inbound,
        plan: Plan,
        hold: _Hold,
        attempts: Attempts,
        deadline: float,
        record: RequestRecord,
        began: float,
    ) -> Outgoing | None:
        response = hold.response
        assert response is not None
        status, upstream_headers = response.status, response.headers
        if hold.reservation is not None:
            self.ledger.observe(hold.reservation, *_remaining(upstream_headers))
        body = relay.chunks(
            response,
            self._idle,
            relay.Decoder(
                "" if relay.passes_encoding(upstream_headers) else upstream_headers.get("content-encoding", "")
            ),
        )
        headers = client_headers(upstream_headers, host)
        record.upstream_request_id = upstream_headers.get("x-request-id", "") or record.upstream_request_id
        if status < 300 and response.content_type == "text/event-stream":
            self._success(host)
            self._tried(record, hold, host, "ok", began, status)
            await self._placement.served(plan, inbound.route, host, None)
            return Outgoing(status, headers, stream=self._stream(host, inbound, plan, hold, body, record))
        cap = relay.JSON_CAP if status < 300 else ERROR_BODY_CAP
        readable = status >= 300 or "json" in response.content_type
        try:
            parts, complete = await relay.read_capped(body, cap) if readable else ([], False)
        except relay.CutOff as exc:
            self._tried(record, hold, host, Breakage.CUT_OFF.value, began, status)
            self._broken(host, Breakage.CUT_OFF, str(exc), hold, inbound, attempts, deadline)
            return None
        content = b"".join(parts)
        verdict = Verdict.ANSWERED if status < 300 else self._judged(host, inbound, hold, attempts, status, content)
        self._tried(record, hold, host, "ok" if verdict is Verdict.ANSWERED else verdict.value, began, status)
        if verdict is not Verdict.ANSWERED:
            return None
        if status < 500:  # a 5xx relayed because a create may have happened is no sign of health
            self._success(host)
        if not complete:
            # Large or binary (file content, audio, batch output): relayed as it arrives, never held whole.
            return Outgoing(status, headers, stream=self._passthrough(hold, relay.prepend(parts, body), record))
        if status < 300:
            doc = usage.json_or_none(content)  # parsed once: usage, model and the objects it tells of
            used = usage.usage_of(doc)
            record.response_model = usage.model_of(doc)
            hold.settle(used)
            record.input_tokens, record.output_tokens = (used.prompt, used.completion) if used else (None, None)
            await self._placement.served(plan, inbound.route, host, doc)
        else:
            hold.release()  # a 4xx from the model (bad parameter, content filter): not run
        return Outgoing(status, headers, body=content)

    def _judged(
        self, host: Host, inbound: Inbound, hold: _Hold, attempts: Attempts, status: int, content: bytes
    ) -> Verdict:
        """Act on an upstream error answer; ANSWERED when it is the model's own answer for the client."""
        response = hold.response
        assert response is not None
        judgement = judge(status, response.headers, content)
        verdict = judgement.verdict
        if verdict is Verdict.ANSWERED:
            return verdict
        hold.release()
        if verdict is Verdict.TOKEN_LIMIT:
            attempts.saw_429 = True
            # Only requests at least this large are kept from this host: a smaller one may fit now.
            used = self._health.block_tokens(host.key, max(1, inbound.cost), judgement.retry_after)
            self._telemetry.rate_limited(host.name, "tokens")
            self._telemetry.cooled(host.name, "token_limit")
            self.ledger.surprised(host.key, requests=False, retry_after=judgement.retry_after)
            log.info(
                "host %s: token-limit 429 for a %d-token request; such requests wait %.1fs",
                host.key,
                inbound.cost,
                used,
            )
        elif verdict in (Verdict.REQUEST_LIMIT, Verdict.CAPACITY):
            attempts.saw_429 = True
            used = self._health.cool_down(host.key, judgement.retry_after, f"429 ({verdict.value})")
            kind = "requests" if verdict is Verdict.REQUEST_LIMIT else "capacity"
            self._telemetry.rate_limited(host.name, kind)
            self._telemetry.cooled(host.name, verdict.value)
            if verdict is Verdict.REQUEST_LIMIT:
                self.ledger.surprised(host.key, requests=True, retry_after=judgement.retry_after)
            log.info("host %s answered 429 (%s); cooling down %.1fs", host.key, verdict.value, used)
        elif verdict is Verdict.REFUSED:
            reason = (
                f"upstream {status}: the gateway's identity lacks the 'Cognitive Services OpenAI User' role "
                "on this resource, or its api key is wrong"
            )
            log.error("host %s: %s", host.key, reason)
            self._health.eject(host.key, reason)
            self._telemetry.ejected(host.name, "refused")
            attempts.failure = f"{host.name} refused the gateway's credentials"
        elif verdict is Verdict.NO_DEPLOYMENT:
            reason = f"upstream 404: deployment {host.deployment!r} does not exist on {host.endpoint}"
            log.error("host %s: %s", host.key, reason)
            self._health.eject(host.key, reason)
            self._telemetry.ejected(host.name, "no_deployment")
            attempts.failure = f"{host.name} has no such deployment"
        if counts_against_host(verdict):
            detail = f"answered {status}" if verdict is Verdict.FAILED else f"answered a {status} redirect"
            if verdict is Verdict.REDIRECT:
                log.warning("host %s answered a %d redirect; not followed", host.key, status)
            attempts.failure = f"{host.name} {detail}"
            self._count_failure(host, detail)
        if not retryable(verdict, creates=inbound.route.creates):
            return Verdict.ANSWERED  # a 5xx after a create may have created it: the client must see it
        return verdict

    def _count_failure(self, host: Host, reason: str) -> None:
        """Passive outlier detection: enough failures in a row eject the host."""
        if self._health.record_failure(host.key, reason):
            log.warning("host %s ejected: %s", host.key, reason)
            self._telemetry.ejected(host.name, "failures")

    def _success(self, host: Host) -> None:
        if self._health.record_success(host.key):
            probe = self._health.probe_result(host.key)
            log.warning(
                "host %s: the active health check says down (%s) but live traffic succeeds; trusting live traffic",
                host.key,
                probe.reason if probe else "",
            )

    # -- bodies that are relayed --------------------------------------------------------------------
    def _stream(
        self, host: Host, inbound: Inbound, plan: Plan, hold: _Hold, body: Any, record: RequestRecord
    ) -> relay.Relay:
        """An event stream, event by event; settled with its usage; a break ends it with an error event."""
        scanner = usage.SseScanner(strip_usage=inbound.inject_usage)
        route, placement = inbound.route, self._placement

        async def watch(event: bytes) -> None:
            # The events that tell of objects to record: a new response (and its reasoning items), a new thread.
            if any(marker in event for marker in _RECORDED_EVENTS):
                await placement.record(plan, route, host, usage.data_payload(event))

        events = relay.sse_events(body, scanner, watch if route.creates else None)
        stream = relay.Relay(events, hold.stream_ended, scanner)
        stream.first_byte = record.first_byte
        record.stream = True
        return stream

    def _passthrough(self, hold: _Hold, body: Any, record: RequestRecord) -> relay.Relay:
        stream = relay.Relay(body, hold.body_ended)
        stream.first_byte = record.first_byte
        return stream


def _payload(inbound: Inbound, host: Host) -> bytes:
    """The body as the host needs it: its own deployment name in a v1 `model`, usage asked for if we strip it."""
    body = inbound.body
    if body is None:
        return inbound.raw
    changes: dict[str, Any] = {}
    if inbound.route.by_model and body.get("model") != host.deployment:
        changes["model"] = host.deployment
    if inbound.inject_usage:
        if not changes:
            spliced = usage.with_stream_usage(inbound.raw, body)
            if spliced is not None:
                return spliced
        options = body.get("stream_options")
        changes["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    if not changes:
        return inbound.raw
    return json.dumps({**body, **changes}, separators=(",", ":")).encode()


def _remaining(headers: Mapping[str, str]) -> tuple[int | None, int | None]:
    return _int_header(headers, "x-ratelimit-remaining-tokens"), _int_header(headers, "x-ratelimit-remaining-requests")


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
