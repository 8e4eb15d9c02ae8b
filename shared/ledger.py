"""Reservations, sliding windows and usage records.

Windows are keyed. A host (its `Host.key`) has a token window (TPM over 60 s) and a request window
(RPM/6 over 10 s: Azure enforces RPM over short windows); a client with limits has the same pair
under `client:<name>` (and `client:<name>:<deployment>` for per-deployment limits). A request
reserves its estimated cost on every window it is subject to; when it finishes the reservation is
settled with the real usage (Azure charges the estimate at admission, so a window keeps the larger
of the two), or released when the upstream never admitted it (429, connection refused).

A host's headroom is tightened by the freshest `x-ratelimit-remaining-*` it returned: that number
is moved forward by what this instance has reserved since and what has expired from its window
since, which only ever underestimates what the host has left.

Each window counts a charge a little longer than Azure does (the expiry margin): our stamp is taken
before Azure's. The margin starts small (`expiry_margin_seconds`); a 429 our view did not foresee
widens it by how late the view was, which the 429's Retry-After says (the host frees room that long
after this view did, when the request was sent the moment the view had room), or doubles it when the
429 gave no time; then it decays back to the floor with a half-life of its window's length (a surprise is
remembered about as long as the charges it was about are counted). So it follows the real send-to-admit
jitter without giving away a fixed share of every window.

Real usage is recorded per (UTC day, client, deployment): what /usage reports and what daily
quotas are checked against.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Protocol

from shared.clock import Clock
from shared.window import SlidingWindow

MAX_MARGIN_SECONDS = 2.0
MIN_MARGIN_STEP = 0.01  # a surprise always widens the margin by at least this much


@dataclass(frozen=True)
class TokenUsage:
    prompt: int = 0
    completion: int = 0

    @property
    def total(self) -> int:
        return self.prompt + self.completion


@dataclass(slots=True)  # one per request in flight, an open stream's included
class Reservation:
    keys: tuple[str, ...]  # every window charged; keys[0] is the host's
    tokens: int  # the estimate charged at admission
    prompt: int  # its prompt part: what usage records show when the real usage is unknown
    at: float
    client: str
    deployment: str
    marks: tuple[float, float] = (0.0, 0.0)  # the host's cumulative (tokens, requests) just after this one
    expired: tuple[float, float] = (0.0, 0.0)  # what had left the host's windows (tokens, requests) by then
    state: str = "open"  # open -> settled | released
    slot: int = 0  # the shared ledger's time slot that carries it

    @property
    def host_key(self) -> str:
        return self.keys[0]


@dataclass
class UsageRecord:
    """Real usage of one client on one deployment on one UTC day."""

    prompt: int = 0
    completion: int = 0
    requests: int = 0

    def add(self, usage: TokenUsage) -> None:
        self.prompt += usage.prompt
        self.completion += usage.completion
        self.requests += 1

    @property
    def tokens(self) -> int:
        return self.prompt + self.completion


UsageKey = tuple[str, str, str]  # (day "YYYY-MM-DD", client, deployment)


@dataclass(frozen=True)
class HostUsage:
    """What a host has served through this instance, for /status."""

    tokens: int = 0
    requests: int = 0


class SharedView(Protocol):
    """What other instances have used, as far as this one knows (see table_ledger.py)."""

    def window(self, key: str) -> tuple[float, float]:
        """Others' (tokens, requests) in the current windows of `key`."""
        ...

    def day(self, client: str, deployment: str | None) -> int:
        """Others' real usage today, for a client (on one deployment, or all)."""
        ...


class NothingShared:
    def window(self, key: str) -> tuple[float, float]:
        return 0.0, 0.0

    def day(self, client: str, deployment: str | None) -> int:
        return 0


class Ledger(Protocol):
    def reserve(
        self, keys: tuple[str, ...], tokens: int, *, prompt: int, client: str, deployment: str
    ) -> Reservation: ...

    def settle(self, reservation: Reservation, used: TokenUsage | None) -> None: ...
    def release(self, reservation: Reservation) -> None: ...
    def observe(
        self, reservation: Reservation, remaining_tokens: int | None, remaining_requests: int | None
    ) -> None: ...
    def surprised(self, key: str, requests: bool, retry_after: float | None) -> None: ...
    def headroom(self, key: str, tpm: int, rpm: int) -> tuple[float, float]: ...
    def seconds_until(self, key: str, tokens: int, tpm: int, rpm: int) -> float: ...
    def window_tokens(self, key: str) -> float: ...
    def own_window_tokens(self, key: str) -> float: ...
    def open_tokens(self, key: str) -> float: ...
    def day_tokens(self, client: str, deployment: str | None = None) -> int: ...
    def host_usage(self) -> Mapping[str, HostUsage]: ...
    def records(self) -> Mapping[UsageKey, UsageRecord]: ...
    async def usage_report(self, first: date, last: date) -> Mapping[UsageKey, UsageRecord]: ...
    def describe(self) -> dict[str, Any]: ...
    async def close(self) -> None: ...

    @property
    def warm(self) -> bool:
        """This instance knows what the others use (or has given up waiting to): it may take its full share."""
        ...


_day: tuple[float, float, str] = (0.0, 0.0, "")  # the last day asked for: [start, end) and its name


def utc_day(wall: float) -> str:
    """The UTC day of a wall-clock time, as records name it (asked for every request: the last one is kept)."""
    global _day
    start, end, name = _day
    if start <= wall < end:
        return name
    day = datetime.fromtimestamp(wall, UTC).date()
    start = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
    # fromtimestamp rounds to the microsecond: the day's last microsecond is left to it.
    _day = (start, start + 86400.0 - 1e-6, day.isoformat())
    return _day[2]


def seconds_to_next_day(wall: float) -> float:
    return 86400.0 - wall % 86400.0


@dataclass
class _Hint:
    remaining: float
    mark: float  # cumulative reserved when the request carrying it was reserved
    expired: float  # cumulative expired when it was observed
    observed_at: float


@dataclass
class _Margin:
    """How much longer than Azure a window counts a charge: doubled by a surprise 429, decaying back."""

    floor: float
    half_life: float
    peak: float = 0.0
    since: float = 0.0

    def at(self, now: float) -> float:
        if self.peak <= self.floor:
            return self.floor
        decay: float = 0.5 ** ((now - self.since) / self.half_life)
        return self.floor + (self.peak - self.floor) * decay

    def widen(self, now: float, late_by: float | None) -> None:
        """Count charges `late_by` longer than now (at least a little); None: twice as long."""
        current = self.at(now)
        grown = 2 * max(current, MIN_MARGIN_STEP) if late_by is None else current + max(late_by, MIN_MARGIN_STEP)
        self.peak = min(MAX_MARGIN_SECONDS, grown)
        self.since = now


class _Book:
    def __init__(self, window: float, request_window: float, margin: float) -> None:
        self.tokens = SlidingWindow(window, resolution=window / 240)
        self.requests = SlidingWindow(request_window, resolution=request_window / 200)
        self.token_margin = _Margin(margin, window)
        self.request_margin = _Margin(margin, request_window)
        self.reserved_tokens = 0.0  # cumulative, net of releases
        self.reserved_requests = 0.0
        self.open_tokens = 0.0  # estimates of requests not settled yet (in flight)
        self.token_hint: _Hint | None = None
        self.request_hint: _Hint | None = None


class LocalLedger:
    """This instance's own view; also the local half of the Table Storage ledger."""

    def __init__(
        self,
        clock: Clock,
        *,
        window_seconds: float = 60.0,
        request_window_seconds: float = 10.0,
        expiry_margin_seconds: float = 0.1,
        shared: SharedView | None = None,
    ) -> None:
        self._clock = clock
        self._shared = shared or NothingShared()
        self.window_seconds = window_seconds
        self.request_window_seconds = request_window_seconds
        self._margin = expiry_margin_seconds
        self._books: dict[str, _Book] = {}
        self._served: dict[str, HostUsage] = {}
        self._records: dict[UsageKey, UsageRecord] = {}
        self._client_days: dict[tuple[str, str], int] = {}  # (day, client) -> tokens, over every deployment

    def _book(self, key: str) -> _Book:
        book = self._books.get(key)
        if book is None:
            book = self._books[key] = _Book(self.window_seconds, self.request_window_seconds, self._margin)
        return book

    def reserve(self, keys: tuple[str, ...], tokens: int, *, prompt: int, client: str, deployment: str) -> Reservation:
        now = self._clock.now()
        for key in keys:
            book = self._book(key)
            book.tokens.add(now, tokens)
            book.requests.add(now, 1)
            book.reserved_tokens += tokens
            book.reserved_requests += 1
            book.open_tokens += tokens
        host = self._book(keys[0])
        marks = (host.reserved_tokens, host.reserved_requests)
        # Bring expiry up to date first: a hint answered for this request is loosened only by what expires later.
        host.tokens.total(now - host.token_margin.at(now))
        host.requests.total(now - host.request_margin.at(now))
        expired = (host.tokens.expired_total, host.requests.expired_total)
        return Reservation(keys, tokens, min(prompt, tokens), now, client, deployment, marks, expired)

    def settle(self, reservation: Reservation, used: TokenUsage | None) -> None:
        if reservation.state != "open":
            return
        reservation.state = "settled"
        for key in reservation.keys:
            self._book(key).open_tokens -= reservation.tokens
        if used is not None and used.total > reservation.tokens:
            extra = used.total - reservation.tokens
            for key in reservation.keys:
                book = self._book(key)
                book.tokens.add(reservation.at, extra)
                book.reserved_tokens += extra
        served = used or TokenUsage(reservation.prompt, reservation.tokens - reservation.prompt)
        previous = self._served.get(reservation.host_key, HostUsage())
        self._served[reservation.host_key] = HostUsage(previous.tokens + served.total, previous.requests + 1)
        day = utc_day(self._clock.wall())
        self._records.setdefault((day, reservation.client, reservation.deployment), UsageRecord()).add(served)
        self._client_days[(day, reservation.client)] = (
            self._client_days.get((day, reservation.client), 0) + served.total
        )

    def release(self, reservation: Reservation) -> None:
        if reservation.state != "open":
            return
        reservation.state = "released"
        for key in reservation.keys:
            book = self._book(key)
            book.open_tokens -= reservation.tokens
            book.tokens.add(reservation.at, -reservation.tokens)
            book.requests.add(reservation.at, -1)
            book.reserved_tokens -= reservation.tokens
            book.reserved_requests -= 1
        # A hint observed after this reservation already counted it as spent; taking it back from the
        # cumulative total must not hand that room out again.
        host = self._book(reservation.host_key)
        if host.token_hint is not None and reservation.marks[0] <= host.token_hint.mark:
            host.token_hint.mark -= reservation.tokens
        if host.request_hint is not None and reservation.marks[1] <= host.request_hint.mark:
            host.request_hint.mark -= 1

    def observe(self, reservation: Reservation, remaining_tokens: int | None, remaining_requests: int | None) -> None:
        """The host said what it had left when it admitted this request: roughly when it was reserved here, so
        what has left the window since then (not since the answer, which may be minutes later) loosens it."""
        book = self._book(reservation.host_key)
        if remaining_tokens is not None:
            hint = _Hint(remaining_tokens, reservation.marks[0], reservation.expired[0], reservation.at)
            if book.token_hint is None or hint.mark >= book.token_hint.mark:
                book.token_hint = hint
        if remaining_requests is not None:
            hint = _Hint(remaining_requests, reservation.marks[1], reservation.expired[1], reservation.at)
            if book.request_hint is None or hint.mark >= book.request_hint.mark:
                book.request_hint = hint

    def surprised(self, key: str, requests: bool, retry_after: float | None) -> None:
        """The host answered a 429 this view did not foresee: count charges longer, by what it says."""
        book = self._book(key)
        (book.request_margin if requests else book.token_margin).widen(self._clock.now(), retry_after)

    def headroom(self, key: str, tpm: int, rpm: int) -> tuple[float, float]:
        """(tokens, requests) the windows of `key` can still take now."""
        book = self._book(key)
        now = self._clock.now()
        others_tokens, others_requests = self._shared.window(key)
        token_now = now - book.token_margin.at(now)
        request_now = now - book.request_margin.at(now)
        tokens = tpm - others_tokens - book.tokens.total(token_now)
        requests = self.request_limit(rpm) - others_requests - book.requests.total(request_now)
        window, request_window = self.window_seconds, self.request_window_seconds
        tokens = min(tokens, _hinted(book.token_hint, book.reserved_tokens, book.tokens, now, window))
        requests = min(requests, _hinted(book.request_hint, book.reserved_requests, book.requests, now, request_window))
        return tokens, requests

    def request_limit(self, rpm: int) -> float:
        """Azure enforces RPM over short windows: rpm/6 per 10 s."""
        return max(1.0, rpm * self.request_window_seconds / 60.0)

    def seconds_until(self, key: str, tokens: int, tpm: int, rpm: int) -> float:
        """When a request of this cost could be admitted on `key`, judging by this instance's windows."""
        book = self._book(key)
        now = self._clock.now()
        token_margin, request_margin = book.token_margin.at(now), book.request_margin.at(now)
        others_tokens, others_requests = self._shared.window(key)
        wait_tokens = book.tokens.seconds_until(now - token_margin, tokens, tpm - others_tokens)
        wait_requests = book.requests.seconds_until(now - request_margin, 1, self.request_limit(rpm) - others_requests)
        wait = max(wait_tokens, wait_requests)
        free_tokens, free_requests = self.headroom(key, tpm, rpm)
        if wait in (0.0, math.inf) and (free_tokens < tokens or free_requests < 1) and tokens <= tpm:
            # Held back by an upstream hint or by other instances' usage: both loosen as time passes,
            # at a pace this instance cannot compute exactly, so look again soon.
            wait = book.requests.resolution * 5
        return wait

    def window_tokens(self, key: str) -> float:
        return self.own_window_tokens(key) + self._shared.window(key)[0]

    def own_window_tokens(self, key: str) -> float:
        book = self._book(key)
        now = self._clock.now()
        return book.tokens.total(now - book.token_margin.at(now))

    def open_tokens(self, key: str) -> float:
        """What requests in flight on `key` have reserved (for /status: reserved, apart from used)."""
        return self._book(key).open_tokens

    def day_tokens(self, client: str, deployment: str | None = None) -> int:
        day = utc_day(self._clock.wall())
        if deployment is None:
            own = self._client_days.get((day, client), 0)
        else:
            record = self._records.get((day, client, deployment))
            own = record.tokens if record is not None else 0
        return own + self._shared.day(client, deployment)

    def host_usage(self) -> Mapping[str, HostUsage]:
        return dict(self._served)

    def records(self) -> Mapping[UsageKey, UsageRecord]:
        """This instance's usage records (all of them: the shared ledger writes them out)."""
        return self._records

    async def usage_report(self, first: date, last: date) -> Mapping[UsageKey, UsageRecord]:
        low, high = first.isoformat(), last.isoformat()
        return {key: record for key, record in self._records.items() if low <= key[0] <= high}

    def describe(self) -> dict[str, Any]:
        return {"kind": "memory"}

    @property
    def warm(self) -> bool:
        return True  # nothing to learn from others

    async def close(self) -> None:
        return None


def _hinted(hint: _Hint | None, reserved: float, window: SlidingWindow, now: float, ttl: float) -> float:
    if hint is None or now - hint.observed_at > ttl:
        return math.inf
    return hint.remaining - (reserved - hint.mark) + (window.expired_total - hint.expired)
