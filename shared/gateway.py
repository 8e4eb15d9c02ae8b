"""The composition root: builds every part from Settings once per process and hands HTTP to the router.

function_app.py hands each trigger to one Gateway. I/O resources (the pooled aiohttp session, the
credential, the ledger's background flush) start lazily inside the running event loop. A
configuration that does not load still gives an app that indexes and answers: every route says
503 and names the error (`Misconfigured`), so an operator sees why instead of a missing function.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any

import aiohttp
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import AzureError, ResourceNotFoundError
from starlette.requests import Request
from starlette.responses import Response

from shared import status as status_
from shared import telemetry as telemetry_
from shared import usage_report, web
from shared.affinity import AffinityStore, MemoryAffinityStore, TableAffinityStore
from shared.aggregation import Aggregator
from shared.auth import Authenticator, EntraBearer
from shared.client_limits import ClientLimits
from shared.clock import Clock, ScaledClock
from shared.cluster import Cluster, Host
from shared.config import ConfigError, Routing, Settings, load_settings
from shared.credentials import CredentialError, TokenProvider, build_token_provider
from shared.discovery import Discovery
from shared.dispatch import Dispatcher
from shared.entra import EntraValidator, JwksCache, aiohttp_jwks_fetcher
from shared.errors import GatewayError
from shared.health import HealthBoard, OutlierPolicy
from shared.health_store import HealthStore, MemoryHealthStore, TableHealthStore
from shared.keys import SecretFetcher
from shared.ledger import Ledger, LocalLedger, UsageKey, UsageRecord
from shared.placement import Placement
from shared.probe import probe_host
from shared.proxy import Proxy
from shared.record import RequestRecord
from shared.selection import Selector
from shared.status_page import PAGE, PAGE_HEADERS, wants_page
from shared.storage import AFFINITY_TABLE, HEALTH_TABLE, USAGE_TABLE, table_client
from shared.storage_health import StorageHealth
from shared.table_ledger import TableLedger
from shared.telemetry import Telemetry
from shared.upstream import Upstream

log = logging.getLogger("gateway")
SWEEP_SECONDS = 3600.0  # how often the timer deletes expired affinity records
USAGE_READ_SECONDS = 20.0  # the longest /usage waits for the table
_JSON = {"content-type": "application/json"}


class Gateway:
    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        tokens: TokenProvider | None = None,
        secrets: SecretFetcher | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.settings = settings
        self._telemetry = telemetry or Telemetry()
        self._flush_telemetry: Callable[[], None] = _nothing
        self.clock = clock or ScaledClock(settings.time_scale)
        self._rng = rng or random.Random()
        self._tokens = tokens
        self._secrets = secrets
        self._vault: Any = None  # the Key Vault client behind key_secrets, when this gateway made it
        routing = settings.routing
        self.health = HealthBoard(
            self.clock,
            OutlierPolicy(
                consecutive_failures=routing.consecutive_failures,
                ejection_base_seconds=routing.ejection_base_seconds,
                ejection_max_seconds=routing.ejection_max_seconds,
                default_cooldown_seconds=routing.default_cooldown_seconds,
            ),
        )
        self.authenticator = Authenticator(settings.clients)
        self._proxy: Proxy | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ledger: Ledger | None = None
        self._health_store: HealthStore = MemoryHealthStore()
        self._affinity: AffinityStore = MemoryAffinityStore(self.clock)
        self._identity: AsyncTokenCredential | None = None  # the Function's own, for Storage and Key Vault
        self._background: list[asyncio.Task[None]] = []
        self._starting = asyncio.Lock()
        self._credential_failing = False
        self._swept_at: float | None = None

    async def _start(self) -> Proxy:
        if self._proxy is not None:
            return self._proxy
        async with self._starting:
            if self._proxy is None:
                for warning in self.settings.warnings:
                    log.warning("configuration: %s", warning)
                # One pooled session per process: connections to every region stay warm.
                # No cookie jar: an upstream's cookies are nobody's to send back on later requests.
                self._session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True),
                    auto_decompress=False,
                    cookie_jar=aiohttp.DummyCookieJar(),
                )
                if self._tokens is None:
                    self._tokens = await self._token_provider()
                entra = self.settings.entra
                if entra.enabled:
                    validator = EntraValidator(
                        tenants=entra.tenants,
                        audiences=entra.audiences,
                        required_role=entra.required_role,
                        jwks=JwksCache(aiohttp_jwks_fetcher(self._session), self.clock),
                        authority=entra.authority,
                    )
                    bearer = EntraBearer(validator, self.settings.clients, self.settings.entra_default_client)
                    self.authenticator = Authenticator(self.settings.clients, bearer)
                if self.authenticator.keys.secret_names:
                    await self._follow_key_secrets()
                self._ledger = self._build_ledger()
                if telemetry_wanted(self.settings, self._telemetry):
                    self._telemetry, self._flush_telemetry = telemetry_.from_settings(
                        self.settings.telemetry, self._sync_identity
                    )
                self._telemetry.watch(self.settings.cluster, self._ledger, self.health)
                self._proxy = self._compose(self._ledger, self._tokens, self._session)
        return self._proxy

    def _compose(self, ledger: Ledger, tokens: TokenProvider, session: aiohttp.ClientSession) -> Proxy:
        settings = self.settings
        upstream = Upstream(session, tokens, settings.host_keys, self.clock, settings.routing)
        return compose(
            settings.cluster,
            settings.routing,
            self.authenticator,
            ledger,
            self.health,
            self._affinity,
            upstream,
            self.clock,
            self._rng,
            self._telemetry,
        )

    async def _follow_key_secrets(self) -> None:
        """Read the clients' Key Vault key secrets now (the first request needs them) and then every few minutes."""
        fetch = self._secrets
        if fetch is None:
            from azure.keyvault.secrets.aio import SecretClient

            assert self.settings.credential.keyvault_uri is not None  # checked by config
            self._vault = SecretClient(self.settings.credential.keyvault_uri, self._managed_identity())
            fetch = _vault_fetcher(self._vault)
        await self.authenticator.keys.refresh(fetch)
        self._background.append(
            asyncio.create_task(self.authenticator.keys.run(fetch, self.clock, self.settings.key_refresh_seconds))
        )

    def _sync_identity(self) -> Any:
        """The exporters' credential (they are synchronous) for Entra ID ingestion into Application Insights."""
        from azure.identity import ManagedIdentityCredential

        return ManagedIdentityCredential(client_id=self.settings.telemetry.managed_identity_client_id)

    def _managed_identity(self) -> AsyncTokenCredential:
        if self._identity is None:
            from azure.identity.aio import DefaultAzureCredential

            self._identity = DefaultAzureCredential(
                managed_identity_client_id=self.settings.credential.managed_identity_client_id
            )
        return self._identity

    async def _token_provider(self) -> TokenProvider:
        """The upstream identity; while it cannot be had (say, the SPN secret is unreadable) answer 503."""
        try:
            tokens = await build_token_provider(self.settings.credential)
        except CredentialError as exc:
            if not self._credential_failing:
                log.error("upstream credential unavailable: %s", exc)
                self._credential_failing = True
            assert self._session is not None
            await self._session.close()
            self._session = None
            raise GatewayError(
                503,
                "UpstreamCredentialUnavailable",
                "The gateway cannot sign in to Azure OpenAI right now.",
                retry_after=30,
            ) from None
        if self._credential_failing:
            log.warning("upstream credential available again")
            self._credential_failing = False
        return tokens

    def _build_ledger(self) -> Ledger:
        """Table Storage when configured (shared by every instance), else this process's memory."""
        routing, table = self.settings.routing, self.settings.table
        windows: dict[str, Any] = {
            "window_seconds": routing.window_seconds,
            "request_window_seconds": routing.request_window_seconds,
            "expiry_margin_seconds": routing.expiry_margin_seconds,
        }
        if not table.configured:
            log.info("no Table Storage configured: in-memory ledger and health, correct for a single instance only")
            return LocalLedger(self.clock, **windows)
        # Storage is reached with the Function's managed identity, never a shared key.
        identity = None if table.connection_string is not None else self._managed_identity()
        # One account behind every table: whatever fails reports into one health, shown in /status.
        storage = StorageHealth(self.clock)
        ledger = TableLedger(
            table_client(table, USAGE_TABLE, identity),
            self.clock,
            self.settings.instance_id,
            flush_interval=table.flush_interval_seconds,
            read_interval=table.read_cache_seconds,
            health=storage,
            incarnation=f"{self._rng.getrandbits(32):08x}",
            **windows,
        )
        self._health_store = TableHealthStore(table_client(table, HEALTH_TABLE, identity), storage)
        affinity = TableAffinityStore(table_client(table, AFFINITY_TABLE, identity), self.clock)
        self._affinity = affinity
        self._background.append(asyncio.create_task(affinity.run()))
        self._background.append(asyncio.create_task(ledger.run()))
        self._background.append(asyncio.create_task(self._follow_health(table.health_cache_seconds)))
        return ledger

    async def _follow_health(self, interval: float) -> None:
        """Apply the probe results other instances' timers wrote, every few seconds."""
        failing = False
        while True:
            try:
                results = await self._health_store.load()
                failing = False
            except (TimeoutError, AzureError, OSError) as exc:
                if not failing:
                    log.warning("could not read shared health (%s); using the last known", type(exc).__name__)
                failing = True
                results = {}
            for key, result in results.items():
                current = self.health.probe_result(key)
                if current is None or result.checked_at > current.checked_at:
                    self.health.set_probe(key, result)
            await self.clock.sleep(interval)

    async def handle(self, request: Request) -> Response:
        record = RequestRecord(request.method, web.path_of(request))
        try:
            proxy = await self._start()
        except GatewayError as exc:
            return web.error_response(exc, record)
        return await web.serve(request, proxy.handle, record, self._telemetry)

    async def healthz(self, request: Request) -> Response:
        """Liveness, what the Application Gateway probes: 200 while this process can answer.

        Taking the only backend out of the load balancer's pool would only swap the gateway's clear
        OpenAI-shaped errors for the load balancer's own HTML 502, so host trouble is /readyz's business.
        """
        try:
            await self._start()
        except GatewayError as exc:
            return web.error_response(exc, RequestRecord(request.method, web.path_of(request)))
        serving = {logical: self._servable(hosts) for logical, hosts in self.settings.cluster.deployments.items()}
        body = {"status": "ok", "serving": [name for name, hosts in serving.items() if hosts]}
        return Response(json.dumps(body), 200, _JSON)

    async def readyz(self, request: Request) -> Response:
        """Readiness: 200 while at least one host can serve (probe-only verdicts aside: panic mode would use them)
        and the shared ledger has been read once (until then this instance admits a small share only; bounded by
        the ledger's warm-up limit when storage cannot be read)."""
        try:
            await self._start()
        except GatewayError as exc:
            return web.error_response(exc, RequestRecord(request.method, web.path_of(request)))
        assert self._ledger is not None
        serving = {logical: self._servable(hosts) for logical, hosts in self.settings.cluster.deployments.items()}
        servable = any(serving.values())
        ready = servable and self._ledger.warm
        status = "ready" if ready else "warming" if servable else "unavailable"
        body = {"status": status, "deployments": serving}
        return Response(json.dumps(body), 200 if ready else 503, _JSON)

    def _servable(self, hosts: tuple[Host, ...]) -> list[str]:
        return [h.name for h in hosts if self.health.ready_in(h.key, None) == 0.0]

    async def status(self, request: Request) -> Response:
        """Per-host health, cooldown and window usage against quota; no secrets, callers must authenticate.

        A browser's navigation (Accept: text/html, no JSON) gets the status page instead: a shell without
        data, which needs no key; its script fetches this JSON with the key, authenticated as below.
        """
        if wants_page(request.headers.get("accept", "")):
            return Response(PAGE, 200, PAGE_HEADERS)
        record = RequestRecord(request.method, web.path_of(request))
        try:
            proxy = await self._start()
            await self.authenticator.authenticate(request.headers)
        except GatewayError as exc:
            return web.error_response(exc, record)
        assert self._ledger is not None
        report = status_.describe(self.settings, self._ledger, self.health, proxy.in_flight, self.clock.wall())
        # The answer depends on Accept, and a cache must never hand one caller's report to the next.
        return Response(json.dumps(report, indent=2), 200, {**_JSON, "vary": "accept", "cache-control": "no-store"})

    async def usage(self, request: Request) -> Response:
        """Real usage per client x deployment x day (admin clients only), JSON or CSV (`Accept: text/csv`)."""
        record = RequestRecord(request.method, web.path_of(request))
        try:
            await self._start()
            caller = await self.authenticator.authenticate(request.headers)
            if not caller.admin:
                raise GatewayError(403, "403", "Only admin clients may read the usage of every client.")
            today = datetime.fromtimestamp(self.clock.wall(), UTC).date()
            first, last = usage_report.period(request.query_params, today)
            assert self._ledger is not None
            data = usage_report.rows(await self._read_usage(first, last))
        except GatewayError as exc:
            return web.error_response(exc, record)
        if "text/csv" in request.headers.get("accept", ""):
            return Response(usage_report.as_csv(data), 200, {"content-type": "text/csv; charset=utf-8"})
        return Response(usage_report.as_json(first, last, data), 200, _JSON)

    async def _read_usage(self, first: date, last: date) -> Mapping[UsageKey, UsageRecord]:
        """Every instance's usage from the table, within a bound: an admin's report may wait, not hang."""
        assert self._ledger is not None
        try:
            async with asyncio.timeout(self.clock.to_real(USAGE_READ_SECONDS)):
                return await self._ledger.usage_report(first, last)
        except (TimeoutError, AzureError, OSError) as exc:
            raise GatewayError(
                503,
                "storage_unavailable",
                "Usage is read from Table Storage, which cannot be read now; retry later.",
                retry_after=5,
            ) from exc

    async def not_found(self, request: Request) -> Response:
        """Every path the gateway does not serve: OpenAI's 404 shape, not the platform's plain text."""
        error = GatewayError(404, "NotFound", "Resource not found.")
        return web.error_response(error, RequestRecord(request.method, web.path_of(request)))

    async def probe(self) -> None:
        """The timer trigger: probe every host, publish, and apply the results here at once."""
        try:
            await self._start()
        except GatewayError:
            return  # already logged; nothing can be probed without an upstream identity
        assert self._session is not None and self._tokens is not None
        hosts = self.settings.cluster.all_hosts()
        timeout = min(10.0, self.clock.to_real(self.settings.routing.connect_timeout_seconds * 2))
        try:
            headers = [await self._probe_headers(host.key) for host in hosts]
        except CredentialError as exc:
            # The gateway's own identity failed: that says nothing about the hosts, so no verdict this round.
            log.warning("probe skipped: %s", exc)
            return
        results = await asyncio.gather(
            *(
                probe_host(self._session, host, h, previous=self.health.probe_result(host.key), timeout_seconds=timeout)
                for host, h in zip(hosts, headers, strict=True)
            )
        )
        by_key = {host.key: result for host, result in zip(hosts, results, strict=True)}
        for host in hosts:
            result = by_key[host.key]
            previous = self.health.probe_result(host.key)
            if previous is None or previous.healthy != result.healthy:
                log.log(
                    logging.INFO if result.healthy else logging.WARNING,
                    "probe: host %s %s: %s",
                    host.key,
                    "healthy" if result.healthy else "UNHEALTHY",
                    result.reason,
                )
            self.health.set_probe(host.key, result)
        try:
            await self._health_store.publish(by_key)
        except (TimeoutError, AzureError, OSError) as exc:
            log.warning("could not publish probe results (%s); other instances keep the last ones", type(exc).__name__)
        await self._sweep()

    async def _sweep(self) -> None:
        """Expired object homes go, at most once per SWEEP_SECONDS: Table Storage has no TTL, and the timer
        runs on one instance at a time."""
        now = self.clock.now()
        if self._swept_at is not None and now - self._swept_at < SWEEP_SECONDS:
            return
        self._swept_at = now
        removed = await self._affinity.sweep()
        if removed:
            log.info("affinity: swept %d expired records", removed)

    async def _probe_headers(self, host_key: str) -> dict[str, str]:
        assert self._tokens is not None
        key = self.settings.host_keys.get(host_key)
        if key is not None:
            return {"api-key": key.reveal()}
        return {"authorization": "Bearer " + await self._tokens.token()}

    async def close(self) -> None:
        for task in self._background:
            task.cancel()
        self._flush_telemetry()
        if self._ledger is not None:
            await self._ledger.close()
        await self._health_store.close()
        await self._affinity.close()
        if self._vault is not None:
            await self._vault.close()
        if self._identity is not None:
            await self._identity.close()
        if self._session is not None:
            await self._session.close()
        if self._tokens is not None:
            await self._tokens.close()


def _vault_fetcher(client: Any) -> SecretFetcher:
    async def fetch(name: str) -> str | None:
        try:
            secret = await client.get_secret(name)
        except ResourceNotFoundError:
            return None
        value: str | None = secret.value
        return value

    return fetch


def compose(
    cluster: Cluster,
    routing: Routing,
    authenticator: Authenticator,
    ledger: Ledger,
    health: HealthBoard,
    affinity: AffinityStore,
    upstream: Upstream,
    clock: Clock,
    rng: random.Random,
    telemetry: Telemetry,
) -> Proxy:
    """The request path from its parts (the unit tests assemble theirs the same way)."""
    placement = Placement(cluster, affinity, health, routing.default_cooldown_seconds)
    dispatcher = Dispatcher(
        routing=routing,
        ledger=ledger,
        health=health,
        upstream=upstream,
        placement=placement,
        selector=Selector(routing=routing, ledger=ledger, health=health, clock=clock, rng=rng),
        clock=clock,
        rng=rng,
        telemetry=telemetry,
    )
    discovery = Discovery(
        placement.resources,
        dispatcher.ask,
        clock,
        per_minute=routing.discovery_lookups_per_minute,
        negative_seconds=routing.discovery_negative_cache_seconds,
        retry_after=routing.default_cooldown_seconds,
    )
    return Proxy(
        routing=routing,
        authenticator=authenticator,
        limits=ClientLimits(ledger, routing, clock, telemetry),
        placement=placement,
        discovery=discovery,
        dispatcher=dispatcher,
        aggregator=Aggregator(dispatcher, placement, affinity, routing.default_cooldown_seconds),
    )


def _nothing() -> None:
    return None


def telemetry_wanted(settings: Settings, current: Telemetry) -> bool:
    """Exporters from the settings, unless the caller (a test) brought its own."""
    return settings.telemetry.enabled and not current.on


class Misconfigured:
    """What function_app.py serves when the configuration does not load: every route names the error."""

    def __init__(self, error: ConfigError) -> None:
        self.error = str(error)
        log.error("configuration error: %s", self.error)

    def _answer(self, request: Request) -> Response:
        exc = GatewayError(503, "GatewayMisconfigured", f"The gateway's configuration is invalid: {self.error}")
        return web.error_response(exc, RequestRecord(request.method, web.path_of(request)))

    async def handle(self, request: Request) -> Response:
        return self._answer(request)

    healthz = readyz = status = usage = not_found = handle

    async def probe(self) -> None:
        return None

    async def close(self) -> None:
        return None


def from_environment() -> Gateway | Misconfigured:
    try:
        return Gateway(load_settings())
    except ConfigError as exc:
        return Misconfigured(exc)
