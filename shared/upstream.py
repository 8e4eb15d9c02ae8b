"""One exchange with one host: the request goes out with the gateway's own credential, and the answer's
headers come back, within separate connect and response-header timeouts.

The distinction matters for retry safety (outcome.py): a connection that was never made provably
never reached the host; anything later (no headers in time, a dropped connection) may have.
Bodies are read by relay.py with the stream-idle timeout, which is not the wait for headers: a
non-streaming generation sends its headers only when it is done, minutes later perhaps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import aiohttp

from shared import routes
from shared.clock import Clock
from shared.cluster import Host
from shared.config import Routing, Secret
from shared.credentials import CredentialError, TokenProvider
from shared.outcome import Breakage

# Client headers worth passing on; everything else (credentials, cookies, hop-by-hop, forwarding
# headers added by the Application Gateway) stays here. Azure passes at most 10 custom headers anyway.
_FORWARD_REQUEST = frozenset({"content-type", "accept", "user-agent", "x-ms-client-request-id", "openai-beta"})
_MAX_FORWARDED_VALUE = 1024  # a longer user-agent or request id is noise that Azure may refuse
MIN_CONNECT_SECONDS = 1.0  # real seconds


class CredentialUnavailable(Exception):
    """The gateway's own identity failed, not the host: never held against it."""


class Broken(Exception):
    """The exchange ended without headers."""

    def __init__(self, breakage: Breakage, detail: str) -> None:
        super().__init__(detail)
        self.breakage = breakage
        self.detail = detail


class Upstream:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        tokens: TokenProvider,
        host_keys: Mapping[str, Secret],
        clock: Clock,
        routing: Routing,
    ) -> None:
        self._session = session
        self._tokens = tokens
        self._host_keys = host_keys
        self._clock = clock
        # A connection takes network time, which compressed simulated time does not compress: never below a second.
        connect = max(MIN_CONNECT_SECONDS, clock.to_real(routing.connect_timeout_seconds))
        # Only the connection has an aiohttp timeout; the header wait and idle reads are bounded by callers.
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect, sock_connect=connect, sock_read=None)

    async def send(
        self,
        host: Host,
        route: routes.Route,
        query: list[tuple[str, str]],
        headers: Mapping[str, str],
        payload: bytes,
        *,
        header_timeout: float,
    ) -> aiohttp.ClientResponse:
        """The answer with its headers read; `headers` come from `headers()`, `header_timeout` is in clock
        seconds. Raises Broken."""
        url = host.endpoint + route.upstream_path(host.deployment)
        query_string = routes.upstream_query(query)
        if query_string:
            url += "?" + query_string
        try:
            async with asyncio.timeout(self._clock.to_real(max(0.0, header_timeout))):
                # Never follow a redirect: it would carry the host's credential and the prompt elsewhere.
                return await self._session.request(
                    route.method,
                    url,
                    data=payload or None,
                    headers=dict(headers),
                    timeout=self._timeout,
                    allow_redirects=False,
                )
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise Broken(Breakage.UNREACHABLE, f"could not connect ({type(exc).__name__})") from None
        except TimeoutError:
            raise Broken(Breakage.NO_ANSWER, "sent no response headers in time") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise Broken(Breakage.NO_ANSWER, f"dropped the connection ({type(exc).__name__})") from None

    async def headers(self, host: Host, client_headers: Mapping[str, str]) -> dict[str, str]:
        """What goes upstream: a few of the client's headers and the gateway's own credential."""
        headers = {k: v for k, v in client_headers.items() if k in _FORWARD_REQUEST and len(v) <= _MAX_FORWARDED_VALUE}
        headers["accept-encoding"] = "identity"  # usage is read from the body; keep it plain
        key = self._host_keys.get(host.key) if host.auth.type == "api-key" else None
        if key is not None:
            headers["api-key"] = key.reveal()
            return headers
        try:
            headers["authorization"] = "Bearer " + await self._tokens.token()
        except CredentialError as exc:
            raise CredentialUnavailable(str(exc)) from None
        return headers
