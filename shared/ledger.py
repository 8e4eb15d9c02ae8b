"""Reservations and usage windows per host.

A request reserves its estimated cost on the host it is sent to; when it finishes the reservation
is settled with the real usage (Azure charges the estimate at admission, so the window keeps the
larger of the two), or released when the upstream never admitted it (429, connection refused).

Headroom is tightened by the freshest `x-ratelimit-remaining-*` a host returned: that number is
moved forward by what this instance has reserved since and what has expired from its window since,
which only ever underestimates what the host has left.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from shared.clock import Clock
from shared.window import SlidingWindow


@dataclass
class Reservation:
    host_key: str
    tokens: int
    at: float
    client: str
    mark: float = 0.0  # this host's cumulative reserved tokens just after this reservation
    request_mark: float = 0.0
    state: str = "open"  # open -> settled | released
    slot: int = 0  # the shared ledger's time slot whose row carries it


@dataclass(frozen=True)
class Usage:
    """What a host has served, for /status and usage records."""

    tokens: int = 0
    requests: int = 0
    by_client: Mapping[str, int] = field(default_factory=dict)


class Ledger(Protocol):
    def reserve(self, host_key: str, tokens: int, client: str) -> Reservation: ...
    def settle(self, reservation: Reservation, used: int | None) -> None: ...
    def release(self, reservation: Reservation) -> None: ...
    def observe(
        self, reservation: Reservation, remaining_tokens: int | None, remaining_requests: int | None
    ) -> None: ...
    def headroom(self, host_key: str, tpm: int, rpm: int) -> tuple[float, float]: ...
    def seconds_until(self, host_key: str, tokens: int, tpm: int, rpm: int) -> float: ...
    def window_tokens(self, host_key: str) -> float: ...
    def own_window_tokens(self, host_key: str) -> float: ...
    def usage(self) -> Mapping[str, Usage]: ...
    def describe(self) -> dict[str, Any]: ...
    async def close(self) -> None: ...


@dataclass
class _Hint:
    remaining: float
    mark: float  # cumulative reserved when the request carrying it was reserved
    expired: float  # cumulative expired when it was observed
    observed_at: float


class _HostBook:
    def __init__(self, window: float, request_window: float, resolution: float) -> None:
        self.tokens = SlidingWindow(window, resolution)
        self.requests = SlidingWindow(request_window, resolution)
        self.reserved_tokens = 0.0  # cumulative, net of releases
        self.reserved_requests = 0.0
        self.token_hint: _Hint | None = None
        self.request_hint: _Hint | None = None
        self.served_tokens = 0
        self.served_requests = 0
        self.by_client: dict[str, int] = {}


class LocalLedger:
    """This instance's own view; also the local half of the Table Storage ledger."""

    def __init__(
        self,
        clock: Clock,
        *,
        window_seconds: float = 60.0,
        request_window_seconds: float = 10.0,
        expiry_margin_seconds: float = 0.5,
        resolution: float = 0.25,
        others: Callable[[str], tuple[float, float]] | None = None,
    ) -> None:
        self._clock = clock
        # (tokens, requests) other instances have used in the current windows, per host: see TableLedger.
        self._others = others or (lambda _: (0.0, 0.0))
        self._window = window_seconds + expiry_margin_seconds
        self._request_window = request_window_seconds + expiry_margin_seconds
        self._resolution = resolution
        self.request_window_seconds = request_window_seconds
        self.window_seconds = window_seconds
        self._books: dict[str, _HostBook] = {}

    def _book(self, host_key: str) -> _HostBook:
        book = self._books.get(host_key)
        if book is None:
            book = self._books[host_key] = _HostBook(self._window, self._request_window, self._resolution)
        return book

    def reserve(self, host_key: str, tokens: int, client: str) -> Reservation:
        now = self._clock.now()
        book = self._book(host_key)
        book.tokens.add(now, tokens)
        book.requests.add(now, 1)
        book.reserved_tokens += tokens
        book.reserved_requests += 1
        return Reservation(host_key, tokens, now, client, book.reserved_tokens, book.reserved_requests)

    def settle(self, reservation: Reservation, used: int | None) -> None:
        if reservation.state != "open":
            return
        reservation.state = "settled"
        book = self._book(reservation.host_key)
        if used is not None and used > reservation.tokens:
            extra = used - reservation.tokens
            book.tokens.add(reservation.at, extra)
            book.reserved_tokens += extra
        served = reservation.tokens if used is None else used
        book.served_tokens += served
        book.served_requests += 1
        book.by_client[reservation.client] = book.by_client.get(reservation.client, 0) + served

    def release(self, reservation: Reservation) -> None:
        if reservation.state != "open":
            return
        reservation.state = "released"
        book = self._book(reservation.host_key)
        book.tokens.add(reservation.at, -reservation.tokens)
        book.requests.add(reservation.at, -1)
        book.reserved_tokens -= reservation.tokens
        book.reserved_requests -= 1
        # A hint observed after this reservation already counted it as spent; taking it back from the
        # cumulative total must not hand that room out again.
        if book.token_hint is not None and reservation.mark <= book.token_hint.mark:
            book.token_hint.mark -= reservation.tokens
        if book.request_hint is not None and reservation.request_mark <= book.request_hint.mark:
            book.request_hint.mark -= 1

    def observe(self, reservation: Reservation, remaining_tokens: int | None, remaining_requests: int | None) -> None:
        book = self._book(reservation.host_key)
        now = self._clock.now()
        if remaining_tokens is not None:
            hint = _Hint(remaining_tokens, reservation.mark, book.tokens.expired_total, now)
            if book.token_hint is None or hint.mark >= book.token_hint.mark:
                book.token_hint = hint
        if remaining_requests is not None:
            hint = _Hint(remaining_requests, reservation.request_mark, book.requests.expired_total, now)
            if book.request_hint is None or hint.mark >= book.request_hint.mark:
                book.request_hint = hint

    def headroom(self, host_key: str, tpm: int, rpm: int) -> tuple[float, float]:
        """(tokens, requests) this host can still take now."""
        book = self._book(host_key)
        now = self._clock.now()
        others_tokens, others_requests = self._others(host_key)
        tokens = tpm - others_tokens - book.tokens.total(now)
        requests = self.request_limit(rpm) - others_requests - book.requests.total(now)
        tokens = min(tokens, self._hinted(book.token_hint, book.reserved_tokens, book.tokens, now, self._window))
        requests = min(
            requests, self._hinted(book.request_hint, book.reserved_requests, book.requests, now, self._request_window)
        )
        return tokens, requests

    def request_limit(self, rpm: int) -> float:
        """Azure enforces RPM over short windows: rpm/6 per 10 s."""
        return max(1.0, rpm * self.request_window_seconds / 60.0)

    @staticmethod
    def _hinted(hint: _Hint | None, reserved: float, window: SlidingWindow, now: float, ttl: float) -> float:
        if hint is None or now - hint.observed_at > ttl:
            return math.inf
        return hint.remaining - (reserved - hint.mark) + (window.expired_total - hint.expired)

    def seconds_until(self, host_key: str, tokens: int, tpm: int, rpm: int) -> float:
        """When a request of this cost could be admitted, judging by this instance's windows."""
        book = self._book(host_key)
        now = self._clock.now()
        others_tokens, others_requests = self._others(host_key)
        wait_tokens = book.tokens.seconds_until(now, min(tokens, tpm), tpm - others_tokens)
        wait_requests = book.requests.seconds_until(now, 1, self.request_limit(rpm) - others_requests)
        wait = max(wait_tokens, wait_requests)
        free_tokens, free_requests = self.headroom(host_key, tpm, rpm)
        if wait in (0.0, math.inf) and (free_tokens < min(tokens, tpm) or free_requests < 1):
            # Held back by an upstream hint or by other instances' usage: both loosen as time passes,
            # at a pace this instance cannot compute exactly, so look again soon.
            wait = self._resolution
        return wait

    def window_tokens(self, host_key: str) -> float:
        return self._book(host_key).tokens.total(self._clock.now())

    def own_window_tokens(self, host_key: str) -> float:
        """This instance's share of the window (all of it, for an instance that shares nothing)."""
        return self.window_tokens(host_key)

    def usage(self) -> Mapping[str, Usage]:
        return {
            key: Usage(book.served_tokens, book.served_requests, dict(book.by_client))
            for key, book in self._books.items()
        }

    def describe(self) -> dict[str, Any]:
        return {"kind": "memory"}

    async def close(self) -> None:
        return None
