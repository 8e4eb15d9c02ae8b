"""Inbound caller authentication: Entra ID bearer JWTs (design.md, Security).

A caller sends `Authorization: Bearer <JWT>`; the token must be RS256-signed by a key from its
tenant's JWKS, be issued by an allowed tenant for one of our audiences, be within its validity
window, and (optionally) carry a required app role. Failures become `AuthError` with a short,
caller-safe reason; the token itself is never logged nor echoed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.algorithms import RSAAlgorithm

from shared.clock import Clock

log = logging.getLogger(__name__)

JwksFetcher = Callable[[str], Awaitable[Mapping[str, Any]]]
"""url -> JWKS document (`{"keys": [...]}`)."""


class AuthError(Exception):
    """401 (bad or missing credential) or 403 (valid credential, not allowed)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message  # safe to return to the caller: never contains the token


def _unauthorized(reason: str) -> AuthError:
    return AuthError(401, reason)


@dataclass(frozen=True)
class Principal:
    tenant: str
    roles: tuple[str, ...]
    app_id: str = ""  # the application the token was issued to (azp / appid): which client it acts as


class JwksUnavailable(Exception):
    """The JWKS endpoint could not be fetched or returned an unusable document."""


@dataclass(frozen=True)
class _KeySet:
    keys: Mapping[str, RSAPublicKey]
    fetched_at: float


class JwksCache:
    """Signing keys per JWKS URL: fetched lazily, kept for `ttl` clock seconds.

    An unknown kid triggers an immediate refresh (key rotation), but a URL is fetched at most once
    per `min_refresh` seconds outside ttl expiry, so a stream of bogus kids cannot hammer the
    endpoint. A failed fetch leaves the cache as it was and is remembered for `failure_hold`
    seconds, during which callers needing it are refused without another fetch: an unauthenticated
    flood while the endpoint fails costs at most one fetch per URL per hold. Concurrent misses share
    one in-flight fetch. URLs come only from the allow-listed tenants, so every map here is bounded.
    """

    def __init__(
        self,
        fetcher: JwksFetcher,
        clock: Clock,
        *,
        ttl: float = 3600.0,
        min_refresh: float = 300.0,
        failure_hold: float = 10.0,
    ) -> None:
        self._fetcher = fetcher
        self._clock = clock
        self._ttl = ttl
        self._min_refresh = min_refresh
        self._failure_hold = failure_hold
        self._sets: dict[str, _KeySet] = {}
        self._last_attempt: dict[str, float] = {}
        self._failed_at: dict[str, float] = {}
        self._inflight: dict[str, asyncio.Task[_KeySet]] = {}

    async def key(self, url: str, kid: str) -> RSAPublicKey | None:
        """The key `kid` from `url`, or None if absent; raises JwksUnavailable if fetching fails."""
        now = self._clock.now()
        cached = self._sets.get(url)
        if cached is not None and now - cached.fetched_at < self._ttl:
            if kid in cached.keys:
                return cached.keys[kid]
            if now - self._last_attempt[url] < self._min_refresh:
                return None
        failed = self._failed_at.get(url)
        if failed is not None and now - failed < self._failure_hold:
            raise JwksUnavailable(url)
        fresh = await self._refresh(url)
        return fresh.keys.get(kid)

    async def _refresh(self, url: str) -> _KeySet:
        task = self._inflight.get(url)
        if task is None:
            self._last_attempt[url] = self._clock.now()
            task = asyncio.create_task(self._fetch(url))
            self._inflight[url] = task
        # Shielded: one waiter being cancelled must not abort the fetch the others are awaiting.
        return await asyncio.shield(task)

    async def _fetch(self, url: str) -> _KeySet:
        try:
            keys = _parse_jwks(await self._fetcher(url))
        except Exception as exc:
            if url not in self._failed_at:
                log.warning("JWKS fetch from %s failed: %s", url, type(exc).__name__)
            self._failed_at[url] = self._clock.now()
            raise JwksUnavailable(url) from exc
        finally:
            del self._inflight[url]
        if self._failed_at.pop(url, None) is not None:
            log.warning("JWKS fetch from %s works again", url)
        fresh = _KeySet(keys, self._clock.now())
        self._sets[url] = fresh
        return fresh


def _parse_jwks(document: Mapping[str, Any]) -> dict[str, RSAPublicKey]:
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise TypeError("JWKS document has no 'keys' list")
    keys: dict[str, RSAPublicKey] = {}
    for jwk in entries:
        if not isinstance(jwk, dict) or jwk.get("kty") != "RSA" or jwk.get("use", "sig") != "sig":
            continue
        kid, n, e = jwk.get("kid"), jwk.get("n"), jwk.get("e")
        if not (isinstance(kid, str) and isinstance(n, str) and isinstance(e, str)):
            continue
        try:
            # Only n and e: a JWKS must never make us hold (or mistake for public) a private key.
            key = RSAAlgorithm.from_jwk({"kty": "RSA", "n": n, "e": e})
        except (jwt.InvalidKeyError, ValueError):
            continue  # one malformed entry must not take down the tenant's other keys
        if isinstance(key, RSAPublicKey):
            keys[kid] = key
    return keys


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    # NaN would compare False against every bound and so never expire.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _unauthorized("malformed token")
    return float(value)


class EntraValidator:
    def __init__(
        self,
        *,
        tenants: Sequence[str],
        audiences: Sequence[str],
        required_role: str | None,
        jwks: JwksCache,
        wall_time: Callable[[], float] = time.time,
        leeway: float = 120.0,
        authority: str = "https://login.microsoftonline.com",
    ) -> None:
        if not tenants or not audiences:
            raise ValueError("at least one tenant and one audience are required")
        self._tenants = frozenset(t.lower() for t in tenants)
        self._audiences = list(audiences)
        self._required_role = required_role
        self._jwks = jwks
        self._wall_time = wall_time
        self._leeway = leeway
        self._authority = authority.rstrip("/")

    async def validate(self, authorization_header: str) -> Principal:
        scheme, _, token = authorization_header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or " " in token:
            raise _unauthorized("missing bearer token")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:  # PyJWT wraps every parse failure of untrusted input in this
            raise _unauthorized("malformed token") from None
        # Pin the algorithm before touching any key: otherwise alg=HS256 with our public key as
        # the HMAC secret, or alg=none, would "verify".
        if header.get("alg") != "RS256":
            raise _unauthorized("unsupported algorithm")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _unauthorized("missing key id")
        tid = unverified.get("tid")
        # Checked against the allow-list before it goes into a URL or triggers any fetch; the URL uses the
        # canonical (lower-case) tenant, so case variants share one cache entry and one fetch.
        if not isinstance(tid, str) or tid.lower() not in self._tenants:
            raise _unauthorized("tenant not allowed")

        try:
            key = await self._jwks.key(f"{self._authority}/{tid.lower()}/discovery/v2.0/keys", kid)
        except JwksUnavailable:
            raise _unauthorized("could not verify token") from None
        if key is None:
            raise _unauthorized("unknown signing key")

        claims = self._verify(token, key, tid)
        self._check_times(claims)

        roles_claim = claims.get("roles")
        listed = roles_claim if isinstance(roles_claim, list) else []
        roles = tuple(r for r in listed if isinstance(r, str))
        if self._required_role is not None and self._required_role not in roles:
            raise AuthError(403, "missing required role")

        client = claims.get("azp") or claims.get("appid")  # v2 / v1 access tokens
        oid = claims.get("oid")
        parts = [p for p in (client, oid) if isinstance(p, str) and p]
        if not parts:
            raise _unauthorized("token has no client identity")
        app_id = client if isinstance(client, str) and client else parts[0]
        return Principal(tenant=tid, roles=roles, app_id=app_id)

    def _verify(self, token: str, key: RSAPublicKey, tid: str) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                audience=self._audiences,
                issuer=[f"{self._authority}/{tid}/v2.0", f"https://sts.windows.net/{tid}/"],
                leeway=self._leeway,
                # PyJWT reads its own clock; times are checked in _check_times against wall_time.
                options={
                    "require": ["exp", "iat", "iss", "aud"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidSignatureError:
            raise _unauthorized("invalid signature") from None
        except jwt.InvalidAudienceError:
            raise _unauthorized("invalid audience") from None
        except jwt.InvalidIssuerError:
            raise _unauthorized("invalid issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise _unauthorized(f"missing claim {exc.claim}") from None
        except jwt.PyJWTError:
            raise _unauthorized("invalid token") from None

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        now = self._wall_time()
        exp = _number(claims, "exp")  # never None: PyJWT enforced "require"
        if exp is None or exp <= now - self._leeway:
            raise _unauthorized("token expired")
        for start in (_number(claims, "nbf"), _number(claims, "iat")):
            if start is not None and start > now + self._leeway:
                raise _unauthorized("token not yet valid")


def aiohttp_jwks_fetcher(session: aiohttp.ClientSession, timeout: float = 5.0) -> JwksFetcher:
    """A JwksFetcher over `session`; `timeout` is real seconds for the whole request."""
    client_timeout = aiohttp.ClientTimeout(total=timeout)

    async def fetch(url: str) -> Mapping[str, Any]:
        async with session.get(url, timeout=client_timeout, raise_for_status=True) as response:
            document = await response.json(content_type=None)
        if not isinstance(document, dict):
            raise TypeError("JWKS document is not a JSON object")
        return document

    return fetch
