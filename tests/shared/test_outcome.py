"""outcome.judge and the retry-safety rules: pure tables."""

from __future__ import annotations

import pytest

from shared.outcome import Breakage, Verdict, counts_against_host, judge, retryable, upstream_charged

TOKEN_MESSAGE = b'{"error":{"code":"429","message":"... have exceeded token rate limit of your current tier."}}'
CALL_MESSAGE = b'{"error":{"code":"429","message":"... have exceeded call rate limit of your current tier."}}'
BUSY = b'{"error":{"code":"429","message":"The service is experiencing high demand."}}'


@pytest.mark.parametrize(
    ("status", "headers", "body", "verdict"),
    [
        (200, {}, b"{}", Verdict.ANSWERED),
        (400, {}, b'{"error":{"code":"content_filter"}}', Verdict.ANSWERED),
        (404, {}, b'{"error":{"code":"not_found"}}', Verdict.ANSWERED),  # an object the region does not have
        (404, {}, b'{"error":{"code":"DeploymentNotFound"}}', Verdict.NO_DEPLOYMENT),
        (401, {}, b"", Verdict.REFUSED),
        (403, {}, b"", Verdict.REFUSED),
        (429, {"x-ratelimit-reset-tokens": "8"}, b"", Verdict.TOKEN_LIMIT),
        (429, {"x-ratelimit-reset-requests": "2"}, b"", Verdict.REQUEST_LIMIT),
        (429, {"x-ratelimit-reset-requests": "2", "x-ratelimit-reset-tokens": "8"}, b"", Verdict.REQUEST_LIMIT),
        (429, {}, TOKEN_MESSAGE, Verdict.TOKEN_LIMIT),
        (429, {}, CALL_MESSAGE, Verdict.REQUEST_LIMIT),
        (429, {"x-ratelimit-reset-requests": "2"}, BUSY, Verdict.CAPACITY),
        (429, {}, b"", Verdict.TOKEN_LIMIT),  # unknown: scoped to the request's size, the cautious choice
        (408, {}, b"", Verdict.FAILED),
        (500, {}, b"", Verdict.FAILED),
        (599, {}, b"", Verdict.FAILED),
        (302, {"location": "https://elsewhere"}, b"", Verdict.REDIRECT),
    ],
)
def test_judge(status: int, headers: dict[str, str], body: bytes, verdict: Verdict) -> None:
    assert judge(status, headers, body).verdict is verdict


def test_a_429_carries_what_the_host_asked_for() -> None:
    assert judge(429, {"retry-after-ms": "2500"}, TOKEN_MESSAGE).retry_after == 2.5


@pytest.mark.parametrize("outcome", [*Verdict, *Breakage])
def test_retry_rules(outcome: Verdict | Breakage) -> None:
    never_ran = outcome is Breakage.UNREACHABLE or outcome in (
        Verdict.TOKEN_LIMIT,
        Verdict.REQUEST_LIMIT,
        Verdict.CAPACITY,
        Verdict.REFUSED,
        Verdict.NO_DEPLOYMENT,
        Verdict.REDIRECT,
    )
    if outcome is Verdict.ANSWERED:
        assert not retryable(outcome, creates=False) and not retryable(outcome, creates=True)
        return
    assert retryable(outcome, creates=False)  # a generation may go elsewhere after any failure
    assert retryable(outcome, creates=True) is never_ran  # a create only when it provably never ran


def test_what_stays_charged_and_what_counts_against_the_host() -> None:
    assert upstream_charged(Breakage.NO_ANSWER) and upstream_charged(Breakage.CUT_OFF)
    assert not upstream_charged(Breakage.UNREACHABLE) and not upstream_charged(Verdict.TOKEN_LIMIT)
    assert counts_against_host(Verdict.FAILED) and counts_against_host(Breakage.UNREACHABLE)
    assert not counts_against_host(Verdict.TOKEN_LIMIT) and not counts_against_host(Verdict.ANSWERED)
