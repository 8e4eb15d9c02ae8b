"""BearerTokenProvider: one cached token, refreshed once shortly before expiry; errors without secrets."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from azure.core.credentials import AccessToken

from shared.config import CredentialSettings, Secret
from shared.credentials import (
    FAILURE_HOLD_SECONDS,
    REFRESH_MARGIN_SECONDS,
    SCOPE,
    BearerTokenProvider,
    CredentialError,
    StaticCredential,
    build_token_provider,
)

T0 = 1_700_000_000.0
LIFETIME = 3600


class Wall:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class FakeCredential:
    """Counts get_token calls; each token lives an hour from the (fake) wall time of issue."""

    def __init__(self, wall: Wall, fail: Exception | None = None, ticks: int = 0) -> None:
        self.wall = wall
        self.fail = fail
        self.ticks = ticks  # event-loop turns to take, so that concurrent callers pile up
        self.calls: list[tuple[str, ...]] = []
        self.closed = False

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.calls.append(scopes)
        for _ in range(self.ticks):
            await asyncio.sleep(0)
        if self.fail is not None:
            raise self.fail
        return AccessToken(f"token-{len(self.calls)}", int(self.wall.now) + LIFETIME)

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
def wall() -> Wall:
    return Wall()


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_the_token_is_cached_and_refreshed_ahead_of_expiry_without_waiting(wall: Wall) -> None:
    credential = FakeCredential(wall, ticks=3)
    provider = BearerTokenProvider(credential, wall_time=wall)  # type: ignore[arg-type]
    assert await provider.token() == "token-1"
    assert credential.calls == [(SCOPE,)]
    wall.now = T0 + LIFETIME - REFRESH_MARGIN_SECONDS - 1  # 5 min 1 s before expiry: still fresh
    assert await provider.token() == "token-1"
    assert len(credential.calls) == 1
    wall.now = T0 + LIFETIME - REFRESH_MARGIN_SECONDS  # 5 min before expiry: refreshed in the background
    assert await provider.token() == "token-1"  # this request does not wait for it
    assert await provider.token() == "token-1"
    await settle()
    assert await provider.token() == "token-2"
    assert len(credential.calls) == 2  # one refresh, however many callers asked meanwhile


async def test_a_short_lived_token_is_refreshed_at_half_its_life(wall: Wall) -> None:
    class ShortLived(FakeCredential):
        async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            self.calls.append(scopes)
            return AccessToken(f"token-{len(self.calls)}", int(self.wall.now) + 4)

    credential = ShortLived(wall)
    provider = BearerTokenProvider(credential, wall_time=wall)  # type: ignore[arg-type]
    assert await provider.token() == "token-1"
    wall.now = T0 + 1.9
    assert await provider.token() == "token-1"
    assert len(credential.calls) == 1
    wall.now = T0 + 2
    await provider.token()
    await settle()
    assert await provider.token() == "token-2"


async def test_concurrent_callers_share_one_refresh(wall: Wall) -> None:
    credential = FakeCredential(wall, ticks=5)
    provider = BearerTokenProvider(credential, wall_time=wall)  # type: ignore[arg-type]
    tokens = await asyncio.gather(*(provider.token() for _ in range(20)))
    assert tokens == ["token-1"] * 20
    assert len(credential.calls) == 1
    wall.now += LIFETIME
    tokens = await asyncio.gather(*(provider.token() for _ in range(20)))
    assert tokens == ["token-2"] * 20
    assert len(credential.calls) == 2


async def test_a_credential_failure_becomes_a_safe_credential_error_held_briefly(wall: Wall) -> None:
    secret = "client_secret=hunter2"
    credential = FakeCredential(wall, fail=RuntimeError(f"AADSTS7000215: invalid {secret}"))
    provider = BearerTokenProvider(credential, wall_time=wall)  # type: ignore[arg-type]
    with pytest.raises(CredentialError) as info:
        await provider.token()
    assert "hunter2" not in str(info.value)
    assert "RuntimeError" in str(info.value)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__  # the original (with the secret) is not chained into tracebacks
    credential.fail = None
    with pytest.raises(CredentialError):  # within the hold: answered at once, the identity endpoint is spared
        await provider.token()
    assert len(credential.calls) == 1
    wall.now += FAILURE_HOLD_SECONDS
    assert await provider.token() == "token-2"  # then the next caller tries again


async def test_a_failed_refresh_keeps_the_token_that_is_still_valid(wall: Wall) -> None:
    credential = FakeCredential(wall)
    provider = BearerTokenProvider(credential, wall_time=wall)  # type: ignore[arg-type]
    assert await provider.token() == "token-1"
    credential.fail = RuntimeError("identity endpoint down")
    wall.now = T0 + LIFETIME - 60
    assert await provider.token() == "token-1"
    await settle()
    assert await provider.token() == "token-1"  # the refresh failed; the token is still good for a minute
    wall.now = T0 + LIFETIME + 1
    with pytest.raises(CredentialError):
        await provider.token()
    credential.fail = None
    wall.now += FAILURE_HOLD_SECONDS
    assert (await provider.token()).startswith("token-")


async def test_close_closes_the_credential_and_the_extras(wall: Wall) -> None:
    credential, extra = FakeCredential(wall), FakeCredential(wall)
    provider = BearerTokenProvider(credential, wall_time=wall, closers=(extra,))  # type: ignore[arg-type]
    await provider.close()
    assert credential.closed
    assert extra.closed


async def test_static_credential(wall: Wall) -> None:
    static = StaticCredential("dev-token", wall_time=wall)
    token = await static.get_token(SCOPE)
    assert token.token == "dev-token"
    assert token.expires_on == int(T0) + 3600
    provider = BearerTokenProvider(static, wall_time=wall)
    assert await provider.token() == "dev-token"


async def test_build_token_provider_static() -> None:
    provider = await build_token_provider(CredentialSettings(mode="static", static_token=Secret("sim-token")))
    assert await provider.token() == "sim-token"
    await provider.close()
