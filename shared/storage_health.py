"""Whether Table Storage answers, as every storage user sees it.

Each call is tracked while it is outstanding. Storage counts as failing while any call has been
outstanding longer than `stall_seconds` (a stopped or overloaded service hangs until the SDK's
timeout, far too late to say so), or while the latest call of some kind failed and that failure is
recent (a kind that is not called again does not keep the flag down forever). Thresholds are real
seconds: an operator reads /status on the wall clock, even when the gateway's clock is compressed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import HttpResponseError

from shared.clock import Clock

log = logging.getLogger("gateway")
STALL_SECONDS = 1.0
FAILURE_MEMORY_SECONDS = 30.0


@dataclass
class _Kind:
    calls: int = 0
    failures: int = 0
    throttled: int = 0  # 503 Server Busy / 500 Operation Timeout: the partition or account is past its target
    failed_at: float | None = None
    succeeded_at: float | None = None
    last_error: str = ""


class StorageHealth:
    def __init__(
        self,
        clock: Clock,
        *,
        stall_seconds: float = STALL_SECONDS,
        failure_memory_seconds: float = FAILURE_MEMORY_SECONDS,
    ) -> None:
        self._clock = clock
        self._stall = stall_seconds
        self._memory = failure_memory_seconds
        self._kinds: dict[str, _Kind] = {}
        self._outstanding: dict[int, float] = {}  # call id -> clock time it started
        self._ids = itertools.count()
        self._warned = False

    @asynccontextmanager
    async def call(self, kind: str, expected: tuple[int, ...] = ()) -> AsyncIterator[None]:
        """Track one storage call of `kind` (e.g. "pulse", "summary"); exceptions pass through, noted,
        except answers with an `expected` status (a lost ETag race is the service working)."""
        stats = self._kinds.setdefault(kind, _Kind())
        stats.calls += 1
        call_id = next(self._ids)
        self._outstanding[call_id] = self._clock.now()
        try:
            yield
        except asyncio.CancelledError:
            raise  # shutting down, or the caller's own bound: says nothing about storage
        except Exception as exc:
            if isinstance(exc, HttpResponseError) and exc.status_code in expected:
                self.succeeded(kind)
            else:
                self.failed(kind, exc)
            raise
        else:
            self.succeeded(kind)
        finally:
            self._outstanding.pop(call_id, None)

    def succeeded(self, kind: str) -> None:
        stats = self._kinds.setdefault(kind, _Kind())
        stats.succeeded_at = self._clock.now()
        if self._warned and self.ok:
            log.warning("table storage answers again")
            self._warned = False

    def failed(self, kind: str, exc: BaseException) -> None:
        stats = self._kinds.setdefault(kind, _Kind())
        stats.failures += 1
        stats.failed_at = self._clock.now()
        stats.last_error = type(exc).__name__
        if isinstance(exc, HttpResponseError) and exc.status_code in (500, 503):
            stats.throttled += 1
        if not self._warned:
            log.warning("table storage failing (%s on %s); serving on local state", stats.last_error, kind)
            self._warned = True

    def forget(self, *kinds: str) -> None:
        """Calls of these kinds will not be made again for now (a role given up): their last outcome is moot."""
        for kind in kinds:
            stats = self._kinds.get(kind)
            if stats is not None:
                stats.failed_at = None

    def _age(self, since: float) -> float:
        """Real seconds since a clock time."""
        return self._clock.to_real(self._clock.now() - since)

    @property
    def stalled(self) -> bool:
        return any(self._age(started) > self._stall for started in self._outstanding.values())

    @property
    def failing(self) -> tuple[str, ...]:
        """The kinds whose latest call failed, recently."""
        return tuple(
            kind
            for kind, stats in self._kinds.items()
            if stats.failed_at is not None
            and (stats.succeeded_at is None or stats.succeeded_at < stats.failed_at)
            and self._age(stats.failed_at) <= self._memory
        )

    @property
    def ok(self) -> bool:
        return not self.stalled and not self.failing

    def describe(self) -> dict[str, Any]:
        return {
            "storage_ok": self.ok,
            "stalled": self.stalled,
            "failing": list(self.failing),
            "calls": {kind: stats.calls for kind, stats in self._kinds.items()},
            "failures": {kind: stats.failures for kind, stats in self._kinds.items() if stats.failures},
            "throttled": sum(stats.throttled for stats in self._kinds.values()),
            "last_error": {kind: s.last_error for kind, s in self._kinds.items() if s.last_error},
        }
