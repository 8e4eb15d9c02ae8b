"""Sliding-window TPM and RPM admission for one deployment, charged at arrival as Azure does.

Tokens are counted over a sliding minute; requests as rpm/6 per 10 s (Microsoft's simulator's window), so a
600 RPM deployment refuses more than 100 requests in any 10 seconds. All times are clock seconds.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

TOKEN_WINDOW = 60.0
REQUEST_WINDOW = 10.0


@dataclass(frozen=True)
class SimDeployment:
    """One deployment in one region."""

    name: str
    tpm: int
    rpm: int | None = None  # None: 6 RPM per 1000 TPM, Azure's default ratio

    @property
    def requests_per_window(self) -> int:
        rpm = self.rpm if self.rpm is not None else self.tpm * 6 // 1000
        return max(1, rpm // 6)


@dataclass(frozen=True)
class Throttle:
    """Why a request was refused: clock seconds until it would fit, per tripped limit."""

    token_wait: float | None
    request_wait: float | None

    @property
    def wait(self) -> float:
        return max(w for w in (self.token_wait, self.request_wait) if w is not None)


class Limiter:
    """The token and request windows of one deployment."""

    def __init__(self, deployment: SimDeployment) -> None:
        self.tpm = deployment.tpm
        self.max_requests = deployment.requests_per_window
        self._tokens: deque[tuple[float, int]] = deque()
        self._used = 0  # the sum of `_tokens`, kept as they come and go (a sum per request is O(window))
        self._requests: deque[float] = deque()

    def admit(self, now: float, cost: int) -> Throttle | None:
        """Charge `cost` and return None, or charge nothing and say how long until it would fit."""
        self._expire(now)
        token_wait = self._token_wait(now, cost)
        request_wait = None
        if len(self._requests) >= self.max_requests:
            request_wait = self._requests[len(self._requests) - self.max_requests] + REQUEST_WINDOW - now
        if token_wait is not None or request_wait is not None:
            return Throttle(token_wait, request_wait)
        self._tokens.append((now, cost))
        self._used += cost
        self._requests.append(now)
        return None

    def remaining(self) -> tuple[int, int]:
        """Tokens left in the minute window, requests left in the 10 s window."""
        return max(0, self.tpm - self._used), max(0, self.max_requests - len(self._requests))

    def clear(self) -> None:
        self._tokens.clear()
        self._used = 0
        self._requests.clear()

    def _expire(self, now: float) -> None:
        while self._tokens and self._tokens[0][0] + TOKEN_WINDOW <= now:
            self._used -= self._tokens.popleft()[1]
        while self._requests and self._requests[0] + REQUEST_WINDOW <= now:
            self._requests.popleft()

    def _token_wait(self, now: float, cost: int) -> float | None:
        """None if `cost` fits now, else the time until enough old charges expire for it."""
        excess = self._used + cost - self.tpm
        if excess <= 0:
            return None
        if cost > self.tpm:  # can never fit; ask for a full window rather than a busy loop
            return TOKEN_WINDOW
        for charged_at, tokens in self._tokens:
            excess -= tokens
            if excess <= 0:
                return charged_at + TOKEN_WINDOW - now
        raise AssertionError("unreachable: cost <= tpm frees enough")
