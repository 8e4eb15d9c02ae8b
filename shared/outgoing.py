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
    connection = upstream.get("connection")
    named = {token.strip().lower() for token in connection.split(",")} if connection else set()
    headers = {}
    for key, value in upstream.items():
        name = key.lower()
        if name not in _DROP_RESPONSE and name not in named:
            headers[name] = value
    if passes_encoding(upstream):
        headers["content-encoding"] = upstream["content-encoding"]  # not decoded here: the client must
    headers[BACKEND_HEADER] = host.name
    return headers
