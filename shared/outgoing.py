"""The answer the gateway gives: status, headers and a body (whole, or a Relay streamed to the client)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shared.cluster import Host
from shared.errors import GatewayError
from shared.relay import Relay, passes_encoding

BACKEND_HEADER = "x-gateway-backend"
REQUEST_ID_HEADER = "x-request-id"
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
        # The gateway's own server writes these: passing the upstream's too would send two of each.
        "date",
        "server",
    }
)


@dataclass
class Outgoing:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    stream: Relay | None = None

    @classmethod
    def error(cls, exc: GatewayError) -> Outgoing:
        return cls(exc.status, exc.headers(), exc.body())


def client_headers(upstream: Mapping[str, str], host: Host) -> dict[str, str]:
    """The upstream's headers minus hop-by-hop ones and those the gateway answers for itself."""
    # Headers the upstream names in Connection are hop-by-hop too (RFC 9110, 7.6.1).
    named = {token.strip().lower() for token in upstream.get("connection", "").split(",")}
    headers = {k.lower(): v for k, v in upstream.items() if k.lower() not in _DROP_RESPONSE and k.lower() not in named}
    if passes_encoding(upstream):
        headers["content-encoding"] = upstream["content-encoding"]  # not decoded here: the client must
    headers[BACKEND_HEADER] = host.name
    return headers
