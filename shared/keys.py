"""Gateway keys by client, as SHA-256 digests: from app settings, and from Key Vault secrets that are
re-read in the background, so a key can be rotated without restarting the Function App.

A rotation: write the new key to the client's second secret (both are valid at once), move the app to
it, then replace the first. A secret that cannot be read keeps its last known value; one that is
missing or empty simply grants nothing.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from shared.clock import Clock
from shared.config import Client

log = logging.getLogger("gateway")

# Secret name -> its value, or None when the vault has no such secret.
SecretFetcher = Callable[[str], Awaitable[str | None]]


def digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


class KeyRing:
    def __init__(self, clients: Sequence[Client]) -> None:
        self._static = [(client.name, digest(key.reveal())) for client in clients for key in client.keys]
        self._secrets = [(client.name, secret) for client in clients for secret in client.key_secrets]
        self._fetched: dict[str, bytes] = {}  # secret name -> digest of its current value
        self._failing: set[str] = set()
        self._entries = list(self._static)

    @property
    def secret_names(self) -> list[str]:
        return [secret for _, secret in self._secrets]

    def entries(self) -> list[tuple[str, bytes]]:
        """(client name, key digest) for every key valid now."""
        return self._entries

    async def refresh(self, fetch: SecretFetcher) -> None:
        for _, secret in self._secrets:
            try:
                value = await fetch(secret)
            except Exception as exc:  # noqa: BLE001 - keep the last known key; one log line per outage
                if secret not in self._failing:
                    log.warning(
                        "gateway key secret %r unreadable (%s); keeping its last value", secret, type(exc).__name__
                    )
                    self._failing.add(secret)
                continue
            if secret in self._failing:
                log.info("gateway key secret %r readable again", secret)
                self._failing.discard(secret)
            if value:
                self._fetched[secret] = digest(value)
            else:
                self._fetched.pop(secret, None)
        # Swapped in one assignment, so a request never sees a half-refreshed ring.
        self._entries = self._static + [
            (name, self._fetched[secret]) for name, secret in self._secrets if secret in self._fetched
        ]

    async def run(self, fetch: SecretFetcher, clock: Clock, interval: float) -> None:
        """Refresh forever, every `interval` clock seconds."""
        while True:
            await clock.sleep(interval)
            await self.refresh(fetch)
