"""What an upstream attempt came to, and what follows from it: pure decisions, no I/O.

Two questions are answered here for every attempt: whose fault was it (the host's health, the
request's size, the client, or nobody's), and may the request go to another host. A request that may
already have run upstream is retried only when that is safe: never when it creates an object (a
second batch or file would exist), and a retried generation keeps the first attempt's tokens charged when
the host may have admitted it (a broken connection or timeout; a 5xx answer was not admitted).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from shared.health import is_capacity_429, retry_after_seconds


class Verdict(enum.Enum):
    """An answer with headers, judged."""

    ANSWERED = "answered"  # 2xx, or the model's own 4xx (bad parameter, content filter): relayed as it is
    TOKEN_LIMIT = "token_limit"  # 429: this request's estimate does not fit the token window now
    REQUEST_LIMIT = "request_limit"  # 429: the request-rate window is full, for everyone
    CAPACITY = "capacity"  # 429 "high demand": the region is busy
    REFUSED = "refused"  # 401/403: the gateway's identity lacks its role there, or the key is wrong
    NO_DEPLOYMENT = "no_deployment"  # 404 DeploymentNotFound: the configuration names a missing deployment
    FAILED = "failed"  # 5xx, 408
    REDIRECT = "redirect"  # 3xx: never followed, never relayed


class Breakage(enum.Enum):
    """An attempt that ended without a usable answer."""

    UNREACHABLE = "unreachable"  # connect failed or timed out: the request provably never reached the host
    NO_ANSWER = "no_answer"  # sent (maybe whole), then no headers in time or the connection dropped
    CUT_OFF = "cut_off"  # headers came, the body broke off


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    retry_after: float | None = None  # what the host asked for, seconds


_RETRY_STATUSES = frozenset({408, 500, 502, 503, 504})


def judge(status: int, headers: Mapping[str, str], body: bytes) -> Judgement:
    if status == 429:
        return Judgement(_limit_kind(headers, body), retry_after_seconds(headers))
    if status in (401, 403):
        return Judgement(Verdict.REFUSED)
    if status == 404 and b"DeploymentNotFound" in body[:4096]:
        return Judgement(Verdict.NO_DEPLOYMENT)
    if status in _RETRY_STATUSES or status >= 500:
        return Judgement(Verdict.FAILED)
    if 300 <= status < 400:
        return Judgement(Verdict.REDIRECT)
    return Judgement(Verdict.ANSWERED)


def _limit_kind(headers: Mapping[str, str], body: bytes) -> Verdict:
    """Which limit a 429 is about: the reset headers say, else the message ("token" / "call" rate limit)."""
    if is_capacity_429(body):
        return Verdict.CAPACITY
    if "x-ratelimit-reset-requests" in headers:
        return Verdict.REQUEST_LIMIT
    if "x-ratelimit-reset-tokens" in headers:
        return Verdict.TOKEN_LIMIT
    text = body[:2048].decode("utf-8", "replace").lower()
    if "call rate limit" in text or "request rate limit" in text or "requests per" in text:
        return Verdict.REQUEST_LIMIT
    # Unknown: scope it to this request's size. If it was about requests, smaller requests will see it too.
    return Verdict.TOKEN_LIMIT


# Verdicts given before the upstream ran anything: a retry elsewhere can never duplicate work.
_NOT_RUN = frozenset(
    {
        Verdict.TOKEN_LIMIT,
        Verdict.REQUEST_LIMIT,
        Verdict.CAPACITY,
        Verdict.REFUSED,
        Verdict.NO_DEPLOYMENT,
        Verdict.REDIRECT,
    }
)


def retryable(outcome: Verdict | Breakage, *, creates: bool) -> bool:
    """May the request be sent to another host after this outcome?"""
    if outcome is Verdict.ANSWERED:
        return False
    if outcome is Breakage.UNREACHABLE or outcome in _NOT_RUN:
        return True
    # A 5xx, a missing answer or a cut-off body may come after the upstream acted on the request.
    return not creates


def upstream_charged(outcome: Verdict | Breakage) -> bool:
    """Did the upstream (maybe) admit the request and charge its estimate to the window?

    Admission is counted before the model runs, so a request that got no answer or a cut-off one
    stays charged (its tokens were probably generated) even though another host is tried.
    """
    return outcome in (Breakage.NO_ANSWER, Breakage.CUT_OFF)


def counts_against_host(outcome: Verdict | Breakage) -> bool:
    """Evidence of a sick host for passive outlier detection (not a limit, not the client's doing)."""
    return outcome in (Verdict.FAILED, Verdict.REDIRECT) or isinstance(outcome, Breakage)
