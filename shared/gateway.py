"""The composition root: builds every part from Settings once per process and adapts HTTP to the router.

function_app.py hands each trigger to one Gateway. I/O resources (the pooled aiohttp session, the
credential, the ledger's background flush) start lazily inside the running event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from typing import Any

import aiohttp
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import AzureError, ResourceNotFoundError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from shared.affinity import AffinityStore, MemoryAffinityStore, TableAffinityStore
from shared.auth import Authenticator, EntraBearer
from shared.clock import Clock, ScaledClock
from shared.config import Settings, load_settings
from shared.credentials import CredentialError, TokenProvider, build_token_provider
from shared.entra import EntraValidator, JwksCache, aiohttp_jwks_fetcher
from shared.errors import GatewayError
from shared.health import HealthBoard, OutlierPolicy
from shared.health_store import HealthStore, MemoryHealthStore, TableHealthStore
from shared.keys import SecretFetcher
from shared.ledger import Ledger, LocalLedger
from shared.probe import probe_host
from shared.proxy import Outgoing, Proxy
from shared.storage import AFFINITY_TABLE, HEALTH_TABLE, USAGE_TABLE, table_client
from shared.table_ledger import TableLedger

log = logging.getLogger("gateway")
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
    ) -> None:
        self.settings = settings
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

    @classmethod
    def from_environment(cls) -> Gateway:
        return cls(load_settings())

    async def _start(self) -> Proxy:
        if self._proxy is not None:
            return self._proxy
        async with self._starting:
            if self._proxy is None:
                routing = self.settings.routing
                for warning in self.settings.warnings:
                    log.warning("configuration: %s", warning)
                # One pooled session per process: connections to every region stay warm.
                self._session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True),
                    auto_decompress=False,
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
                    self.authenticator = Authenticator(self.settings.clients, EntraBearer(validator))
                if self.authenticator.keys.secret_names:
                    await self._follow_key_secrets()
                self._ledger = self._build_ledger()
                self._proxy = Proxy(
                    cluster=self.settings.cluster,
                    routing=routing,
                    ledger=self._ledger,
                    affinity=self._affinity,
                    health=self.health,
                    authenticator=self.authenticator,
                    tokens=self._tokens,
                    host_keys=self.settings.host_keys,
                    session=self._session,
                    clock=self.clock,
                    rng=self._rng,
                )
        return self._proxy

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
        ledger = TableLedger(
            table_client(table, USAGE_TABLE, identity),
            self.clock,
            self.settings.instance_id,
            flush_interval=table.flush_interval_seconds,
            read_interval=table.read_cache_seconds,
            **windows,
        )
        self._health_store = TableHealthStore(table_client(table, HEALTH_TABLE, identity))
        self._affinity = TableAffinityStore(table_client(table, AFFINITY_TABLE, identity), self.clock)
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
        try:
            proxy = await self._start()
        except GatewayError as exc:
            return _error(exc)
        raw_path = request.scope.get("raw_path")
        path = raw_path.decode("latin-1").partition("?")[0] if raw_path else request.url.path
        outgoing = await proxy.handle(
            request.method,
            path,
            request.query_params.multi_items(),
            request.headers,
            lambda limit: _read_body(request, limit),
        )
        return _to_response(outgoing)

    async def healthz(self, request: Request) -> Response:
        """For the Application Gateway's probe: 200 while at least one host can serve."""
        try:
            await self._start()
        except GatewayError as exc:
            return _error(exc)
        hosts = self.settings.cluster.all_hosts()
        serving = [h.name for h in hosts if self.health.recovers_in(h.key) != float("inf")]
        status = 200 if serving else 503
        return Response(
            json.dumps({"status": "ok" if serving else "unavailable", "hosts": len(serving)}), status, _JSON
        )

    async def status(self, request: Request) -> Response:
        """Per-host health, cooldown and window usage against quota; no secrets, callers must authenticate."""
        try:
            await self._start()
            await self.authenticator.authenticate(request.headers)
        except GatewayError as exc:
            return _error(exc)
        return Response(json.dumps(self.describe(), indent=2), 200, _JSON)

    def describe(self) -> dict[str, Any]:
        assert self._ledger is not None and self._proxy is not None
        served = self._ledger.usage()
        deployments: dict[str, list[dict[str, Any]]] = {}
        for logical, hosts in self.settings.cluster.deployments.items():
            deployments[logical] = []
            for host in hosts:
                free_tokens, free_requests = self._ledger.headroom(host.key, host.tpm, host.rpm)
                usage = served.get(host.key)
                deployments[logical].append(
                    {
                        "name": host.name,
                        "deployment": host.deployment,
                        "endpoint": host.endpoint,
                        "priority": host.priority,
                        "weight": host.weight,
                        "tpm": host.tpm,
                        "rpm": host.rpm,
                        "window_tokens": round(self._ledger.window_tokens(host.key)),
                        "own_window_tokens": round(self._ledger.own_window_tokens(host.key)),
                        "free_tokens": round(free_tokens),
                        "free_requests": round(free_requests),
                        "served_tokens": usage.tokens if usage else 0,
                        "served_requests": usage.requests if usage else 0,
                        "by_client": dict(usage.by_client) if usage else {},
                        **self.health.describe(host.key),
                    }
                )
        ledger = self._ledger.describe()
        return {
            "instance": self.settings.instance_id,
            "in_flight": self._proxy.in_flight,
            "ledger": ledger,
            "deployments": deployments,
        }

    async def probe(self) -> None:
        """The timer trigger: probe every host, publish, and apply the results here at once."""
        try:
            await self._start()
        except GatewayError:
            return  # already logged; nothing can be probed without an upstream identity
        assert self._session is not None and self._tokens is not None
        hosts = self.settings.cluster.all_hosts()
        timeout = min(10.0, self.clock.to_real(self.settings.routing.connect_timeout_seconds * 2))
        headers = [await self._probe_headers(host.key) for host in hosts]
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

    async def _probe_headers(self, host_key: str) -> dict[str, str]:
        assert self._tokens is not None
        key = self.settings.host_keys.get(host_key)
        if key is not None:
            return {"api-key": key.reveal()}
        try:
            return {"authorization": "Bearer " + await self._tokens.token()}
        except Exception:  # noqa: BLE001 - reported by the probe as a 401 from upstream; never crash the timer
            return {}

    async def close(self) -> None:
        for task in self._background:
            task.cancel()
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


async def _read_body(request: Request, limit: int) -> bytes:
    """Read at most `limit` bytes; answer 413 as soon as the body is known to be larger."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise GatewayError(400, "invalid_request", "Content-Length is not a number.")
        if int(declared) > limit:
            raise GatewayError(
                413, "request_too_large", f"The request body exceeds the gateway's limit of {limit} bytes."
            )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise GatewayError(
                413, "request_too_large", f"The request body exceeds the gateway's limit of {limit} bytes."
            )
    return bytes(body)


def _vault_fetcher(client: Any) -> SecretFetcher:
    async def fetch(name: str) -> str | None:
        try:
            secret = await client.get_secret(name)
        except ResourceNotFoundError:
            return None
        value: str | None = secret.value
        return value

    return fetch


def _error(exc: GatewayError) -> Response:
    return _to_response(Outgoing(exc.status, exc.headers(), exc.body()))


def _to_response(outgoing: Outgoing) -> Response:
    if outgoing.stream is not None:
        return StreamingResponse(outgoing.stream, outgoing.status, outgoing.headers)
    return Response(outgoing.body, outgoing.status, outgoing.headers)
