"""EntraValidator and JwksCache against a real JWKS endpoint (aiohttp on 127.0.0.1, port 0).

Tokens are signed locally with PyJWT; `authority` points at the local server so the JWKS URL
building is exercised. Token times are checked against an injected wall time, the cache's ttl
against a ManualClock: nothing sleeps.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt
import pytest
import pytest_asyncio
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from shared.clock import ManualClock
from shared.entra import (
    AuthError,
    EntraValidator,
    JwksCache,
    Principal,
    aiohttp_jwks_fetcher,
)

TENANT = "11111111-1111-1111-1111-111111111111"
LETTERED = "aaaabbbb-cccc-dddd-eeee-ffff00001111"  # a tenant id whose case can vary
OTHER_TENANT = "22222222-2222-2222-2222-222222222222"
AUDIENCE = "api://gateway"
ROLE = "Gateway.Invoke"
NOW = 1_700_000_000
LIFETIME = 3600
LEEWAY = 120.0
TTL = 3600.0
MIN_REFRESH = 60.0

KEY1 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
KEY2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    return {**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid, "use": "sig"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(obj: Any) -> str:
    return b64url(json.dumps(obj).encode())


@dataclass
class JwksEndpoint:
    """What the local JWKS endpoint serves, and how often it was hit."""

    keys: list[Any]
    hits: int = 0
    down: bool = False
    hang: bool = False
    raw_body: str | None = None  # served verbatim instead of {"keys": keys}
    release: asyncio.Event = field(default_factory=asyncio.Event)


ENDPOINT = web.AppKey("endpoint", JwksEndpoint)


async def serve_jwks(request: web.Request) -> web.StreamResponse:
    endpoint = request.app[ENDPOINT]
    endpoint.hits += 1
    if request.match_info["tid"] not in (TENANT, LETTERED):  # the canonical (lower-case) form only
        raise web.HTTPNotFound()
    if endpoint.down:
        raise web.HTTPServiceUnavailable()
    if endpoint.hang:
        await endpoint.release.wait()
    if endpoint.raw_body is not None:
        return web.Response(text=endpoint.raw_body, content_type="application/json")
    return web.json_response({"keys": endpoint.keys})


@dataclass
class Env:
    endpoint: JwksEndpoint
    authority: str
    session: aiohttp.ClientSession
    clock: ManualClock
    cache: JwksCache

    def validator(
        self,
        *,
        required_role: str | None = None,
        wall_time: float = NOW,
        cache: JwksCache | None = None,
    ) -> EntraValidator:
        return EntraValidator(
            tenants=[TENANT],
            audiences=[AUDIENCE, "api://gateway-alt"],
            required_role=required_role,
            jwks=cache or self.cache,
            wall_time=lambda: wall_time,
            leeway=LEEWAY,
            authority=self.authority,
        )

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """Valid v2 access-token claims; an override of None removes the claim."""
        claims: dict[str, Any] = {
            "aud": AUDIENCE,
            "iss": f"{self.authority}/{TENANT}/v2.0",
            "tid": TENANT,
            "iat": NOW,
            "nbf": NOW,
            "exp": NOW + LIFETIME,
            "azp": "client-app",
            "oid": "object-1",
            "roles": [ROLE],
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, key: rsa.RSAPrivateKey = KEY1, kid: str = "k1", alg: str = "RS256", **overrides: Any) -> str:
        return jwt.encode(self.claims(**overrides), key, algorithm=alg, headers={"kid": kid})

    async def warm_up(self) -> None:
        """Fill the cache with one successful validation, then move past min_refresh."""
        await self.validator().validate(f"Bearer {self.token()}")
        self.clock.advance(MIN_REFRESH)


@pytest_asyncio.fixture
async def env() -> AsyncIterator[Env]:
    endpoint = JwksEndpoint(keys=[jwk(KEY1, "k1")])
    app = web.Application()
    app[ENDPOINT] = endpoint
    app.router.add_get("/{tid}/discovery/v2.0/keys", serve_jwks)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            clock = ManualClock()
            cache = JwksCache(aiohttp_jwks_fetcher(session, timeout=2.0), clock, ttl=TTL, min_refresh=MIN_REFRESH)
            yield Env(endpoint, f"http://127.0.0.1:{port}", session, clock, cache)
            endpoint.release.set()
    finally:
        await runner.cleanup()


async def rejected(validator: EntraValidator, header: str, reason: str, status: int = 401) -> None:
    with pytest.raises(AuthError) as caught:
        await validator.validate(header)
    error = caught.value
    assert (error.status, error.message) == (status, reason)
    token = header.partition(" ")[2]
    if token:
        assert token not in error.message and token not in str(error)


@pytest.mark.asyncio
async def test_valid_token_returns_principal_and_keys_are_cached_for_ttl(env: Env) -> None:
    validator = env.validator()
    expected = Principal(tenant=TENANT, roles=(ROLE,), app_id="client-app")
    assert await validator.validate(f"Bearer {env.token()}") == expected
    assert await validator.validate(f"bearer  {env.token()} ") == expected  # scheme is case-insensitive
    assert env.endpoint.hits == 1
    env.clock.advance(TTL - 1)
    await validator.validate(f"Bearer {env.token()}")
    assert env.endpoint.hits == 1
    env.clock.advance(1)
    await validator.validate(f"Bearer {env.token()}")
    assert env.endpoint.hits == 2


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("overrides", "app_id"),
    [
        ({"aud": "api://gateway-alt"}, "client-app"),
        (  # v1 access token: appid and the sts.windows.net issuer
            {"azp": None, "appid": "legacy-app", "iss": f"https://sts.windows.net/{TENANT}/"},
            "legacy-app",
        ),
        ({"oid": None}, "client-app"),
        ({"azp": None}, "object-1"),  # no application claim: the object id stands for it
    ],
)
async def test_accepted_variants(env: Env, overrides: dict[str, Any], app_id: str) -> None:
    principal = await env.validator().validate(f"Bearer {env.token(**overrides)}")
    assert principal.app_id == app_id
    assert principal.tenant == TENANT


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("wall_time", "reason"),
    [
        (NOW + LIFETIME + LEEWAY + 1, "token expired"),
        (NOW + LIFETIME + LEEWAY, "token expired"),
        (NOW + LIFETIME + LEEWAY - 1, None),  # expired, but within leeway
        (NOW - LEEWAY - 1, "token not yet valid"),
        (NOW - LEEWAY + 1, None),  # not yet valid, but within leeway
    ],
)
async def test_validity_window_uses_wall_time_and_leeway(env: Env, wall_time: float, reason: str | None) -> None:
    validator = env.validator(wall_time=wall_time)
    header = f"Bearer {env.token()}"
    if reason is None:
        assert (await validator.validate(header)).tenant == TENANT
    else:
        await rejected(validator, header, reason)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"nbf": None, "iat": NOW + LEEWAY + 1}, "token not yet valid"),
        ({"exp": None}, "missing claim exp"),
        ({"iat": None}, "missing claim iat"),
        ({"exp": "tomorrow"}, "malformed token"),
        ({"exp": float("nan")}, "malformed token"),
        ({"exp": True}, "malformed token"),
        ({"aud": "api://someone-else"}, "invalid audience"),
        ({"iss": "https://evil.example/v2.0"}, "invalid issuer"),
        # An allowed tenant's token must be issued by that same tenant.
        ({"iss": f"https://sts.windows.net/{OTHER_TENANT}/"}, "invalid issuer"),
        ({"azp": None, "oid": None}, "token has no client identity"),
    ],
)
async def test_invalid_claims_are_rejected(env: Env, overrides: dict[str, Any], reason: str) -> None:
    await rejected(env.validator(), f"Bearer {env.token(**overrides)}", reason)


@pytest.mark.asyncio
@pytest.mark.parametrize("tid", [OTHER_TENANT, None, 42])
async def test_tenant_not_allowed_is_rejected_without_fetching(env: Env, tid: Any) -> None:
    token = env.token(tid=tid, iss=f"{env.authority}/{OTHER_TENANT}/v2.0")
    await rejected(env.validator(), f"Bearer {token}", "tenant not allowed")
    assert env.endpoint.hits == 0


@pytest.mark.asyncio
async def test_unknown_kid_refreshes_exactly_once(env: Env) -> None:
    await env.warm_up()
    validator = env.validator()
    stranger = f"Bearer {env.token(KEY2, kid='k2')}"
    await rejected(validator, stranger, "unknown signing key")
    assert env.endpoint.hits == 2
    await rejected(validator, stranger, "unknown signing key")
    assert env.endpoint.hits == 2


@pytest.mark.asyncio
async def test_key_rotation_is_picked_up_on_unknown_kid(env: Env) -> None:
    await env.warm_up()
    env.endpoint.keys.append(jwk(KEY2, "k2"))
    validator = env.validator()
    assert (await validator.validate(f"Bearer {env.token(KEY2, kid='k2')}")).tenant == TENANT
    assert env.endpoint.hits == 2
    assert (await validator.validate(f"Bearer {env.token()}")).tenant == TENANT
    assert env.endpoint.hits == 2


@pytest.mark.asyncio
async def test_concurrent_cold_requests_share_one_fetch(env: Env) -> None:
    validator = env.validator()
    results = await asyncio.gather(*(validator.validate(f"Bearer {env.token()}") for _ in range(20)))
    assert {p.app_id for p in results} == {"client-app"}
    assert env.endpoint.hits == 1


def forged(header: dict[str, Any], claims: dict[str, Any], sign: Any) -> str:
    signing_input = f"{b64json(header)}.{b64json(claims)}"
    return f"{signing_input}.{b64url(sign(signing_input.encode()))}"


def public_pem() -> bytes:
    return KEY1.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.asyncio
@pytest.mark.parametrize("alg", ["none", "HS256", "RS512", "PS256", None])
async def test_algorithms_other_than_rs256_are_rejected_before_any_key_use(env: Env, alg: str | None) -> None:
    claims = env.claims()
    if alg == "none":
        token = forged({"alg": "none", "kid": "k1"}, claims, lambda _: b"")
    elif alg == "HS256":
        # The classic confusion attack: HMAC keyed with the (public) RSA key's PEM.
        token = forged(
            {"alg": "HS256", "kid": "k1"},
            claims,
            lambda data: hmac.new(public_pem(), data, hashlib.sha256).digest(),
        )
    elif alg is None:
        token = forged({"kid": "k1"}, claims, lambda _: b"sig")
    else:
        token = jwt.encode(claims, KEY1, algorithm=alg, headers={"kid": "k1"})
    await rejected(env.validator(), f"Bearer {token}", "unsupported algorithm")
    assert env.endpoint.hits == 0


@pytest.mark.asyncio
async def test_tampered_payload_fails_signature_check(env: Env) -> None:
    header_part, _, signature = env.token(roles=["Reader"]).split(".")
    escalated = b64json(env.claims(roles=[ROLE, "Admin"]))
    validator = env.validator(required_role=ROLE)
    await rejected(validator, f"Bearer {header_part}.{escalated}.{signature}", "invalid signature")
    # Right kid, wrong signer.
    await rejected(validator, f"Bearer {env.token(KEY2, kid='k1')}", "invalid signature")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("", "missing bearer token"),
        ("Bearer", "missing bearer token"),
        ("Bearer   ", "missing bearer token"),
        ("Basic dXNlcjpwYXNz", "missing bearer token"),
        ("Bearer a b", "missing bearer token"),
        ("Bearer not-a-jwt", "malformed token"),
        ("Bearer a.b.c", "malformed token"),
        ("Bearer ..", "malformed token"),
        (f"Bearer {b64json(['alg'])}.{b64json({})}.c2ln", "malformed token"),
        (f"Bearer {b64json({'alg': 'RS256', 'kid': 'k1'})}.{b64json([1])}.c2ln", "malformed token"),
        (f"Bearer {b64json({'alg': 'RS256', 'kid': 7})}.{b64json({})}.c2ln", "malformed token"),
        (f"Bearer {b64json({'alg': 'RS256'})}.{b64json({'tid': TENANT})}.c2ln", "missing key id"),
    ],
)
async def test_missing_or_garbled_credentials(env: Env, header: str, reason: str) -> None:
    await rejected(env.validator(), header, reason)
    assert env.endpoint.hits == 0


@pytest.mark.asyncio
async def test_required_role(env: Env) -> None:
    validator = env.validator(required_role=ROLE)
    await rejected(validator, f"Bearer {env.token(roles=['Reader'])}", "missing required role", 403)
    await rejected(validator, f"Bearer {env.token(roles=None)}", "missing required role", 403)
    principal = await validator.validate(f"Bearer {env.token(roles=['Reader', ROLE])}")
    assert principal.roles == ("Reader", ROLE)
    # Without a required role, a token with no roles is fine.
    assert (await env.validator().validate(f"Bearer {env.token(roles=None)}")).roles == ()


@pytest.mark.asyncio
async def test_jwks_down_then_back(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    validator = env.validator()
    token = env.token()
    env.endpoint.down = True
    with caplog.at_level(logging.WARNING, logger="shared.entra"):
        await rejected(validator, f"Bearer {token}", "could not verify token")
    assert "JWKS fetch" in caplog.text and token not in caplog.text
    env.endpoint.down = False
    # The failure is held for a while: callers are refused without another fetch...
    await rejected(validator, f"Bearer {token}", "could not verify token")
    assert env.endpoint.hits == 1
    env.clock.advance(10)  # ...then the next caller fetches again
    assert (await validator.validate(f"Bearer {token}")).tenant == TENANT
    assert env.endpoint.hits == 2


def lettered(env: Env) -> EntraValidator:
    return EntraValidator(
        tenants=[LETTERED.upper()],
        audiences=[AUDIENCE],
        required_role=None,
        jwks=env.cache,
        wall_time=lambda: NOW,
        leeway=LEEWAY,
        authority=env.authority,
    )


def variant_token(env: Env, tid: str) -> str:
    return env.token(tid=tid, iss=f"{env.authority}/{tid}/v2.0")


@pytest.mark.asyncio
async def test_an_unauthenticated_flood_while_jwks_fails_costs_one_fetch_per_hold(env: Env) -> None:
    env.endpoint.down = True
    validator = lettered(env)
    tokens = [variant_token(env, variant) for variant in (LETTERED, LETTERED.upper(), LETTERED.title())]
    for _ in range(30):
        for token in tokens:
            await rejected(validator, f"Bearer {token}", "could not verify token")
    assert env.endpoint.hits == 1  # case variants of the tenant are one URL; failures are held
    env.clock.advance(60)
    for token in tokens * 10:
        await rejected(validator, f"Bearer {token}", "could not verify token")
    assert env.endpoint.hits == 2


@pytest.mark.asyncio
async def test_case_variants_of_the_tenant_share_one_cache_entry(env: Env) -> None:
    validator = lettered(env)
    for variant in (LETTERED, LETTERED.upper(), LETTERED.title()):
        assert (await validator.validate(f"Bearer {variant_token(env, variant)}")).tenant == variant
    assert env.endpoint.hits == 1


@pytest.mark.asyncio
async def test_failed_refresh_keeps_cached_keys(env: Env) -> None:
    await env.warm_up()
    env.endpoint.down = True
    validator = env.validator()
    await rejected(validator, f"Bearer {env.token(KEY2, kid='k2')}", "could not verify token")
    assert (await validator.validate(f"Bearer {env.token()}")).tenant == TENANT
    assert env.endpoint.hits == 2


@pytest.mark.asyncio
async def test_jwks_timeout(env: Env) -> None:
    env.endpoint.hang = True
    cache = JwksCache(aiohttp_jwks_fetcher(env.session, timeout=0.1), env.clock)
    await rejected(env.validator(cache=cache), f"Bearer {env.token()}", "could not verify token")


@pytest.mark.asyncio
@pytest.mark.parametrize("body", ["not json", "[1, 2]", '{"keys": "k1"}', "{}"])
async def test_unusable_jwks_document(env: Env, body: str) -> None:
    env.endpoint.raw_body = body
    await rejected(env.validator(), f"Bearer {env.token()}", "could not verify token")


@pytest.mark.asyncio
async def test_malformed_jwks_entries_are_skipped(env: Env) -> None:
    env.endpoint.keys = [
        "junk",
        {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "AA", "y": "AA"},
        {"kty": "RSA", "kid": "bad", "n": "!!!", "e": "AQAB"},
        {"kty": "RSA", "kid": "no-n", "e": "AQAB"},
        {**jwk(KEY2, "enc"), "use": "enc"},
        jwk(KEY1, "k1"),
    ]
    validator = env.validator()
    assert (await validator.validate(f"Bearer {env.token()}")).tenant == TENANT
    await rejected(validator, f"Bearer {env.token(KEY2, kid='enc')}", "unknown signing key")


@pytest.mark.asyncio
async def test_bogus_kid_storm_refreshes_at_most_once_per_min_refresh(env: Env) -> None:
    await env.warm_up()
    validator = env.validator()

    async def bogus(i: int) -> AuthError | Principal:
        try:
            return await validator.validate(f"Bearer {env.token(KEY2, kid=f'bogus-{i}')}")
        except AuthError as error:
            return error

    outcomes = await asyncio.gather(*(bogus(i) for i in range(50)))
    assert all(isinstance(o, AuthError) and o.message == "unknown signing key" for o in outcomes)
    assert env.endpoint.hits == 2
    for i in range(50, 70):
        await bogus(i)
    env.clock.advance(MIN_REFRESH - 1)
    await bogus(70)
    assert env.endpoint.hits == 2
    env.clock.advance(1)
    await bogus(71)
    assert env.endpoint.hits == 3


def test_validator_needs_tenants_and_audiences() -> None:
    async def unused(url: str) -> Mapping[str, Any]:
        raise AssertionError(url)

    cache = JwksCache(unused, ManualClock())
    with pytest.raises(ValueError):
        EntraValidator(tenants=[], audiences=[AUDIENCE], required_role=None, jwks=cache)
    with pytest.raises(ValueError):
        EntraValidator(tenants=[TENANT], audiences=[], required_role=None, jwks=cache)
