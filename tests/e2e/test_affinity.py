"""Requests that must go home: Responses live in the region that created them; sessions stick while they can.

The simulated regions keep responses per region, as Azure does, so continuing one elsewhere is a 404.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import OpenAI

from dev.azurite import Azurite
from dev.stack import CHAT, STATIC_TOKEN, RegionSpec, Stack
from tests.e2e.conftest import TIME_SCALE

# Enough requests per 10 s that no region trips its RPM limit by accident; answers without per-token delay,
# so that filling a region's window takes less real time than the (compressed) minute it lasts.
REGIONS = (RegionSpec("eastus", 60_000), RegionSpec("westus", 90_000), RegionSpec("uksouth", 120_000))
FAST = ("--per-token", "0")
MESSAGES: Any = [{"role": "user", "content": "Say something."}]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("affinity"), REGIONS, TIME_SCALE, simulator_args=FAST) as s:
        yield s


def gateway(stack: Stack, index: int = 0) -> OpenAI:
    return OpenAI(base_url=stack.gateway_urls[index] + "/openai/v1/", api_key=stack.client_key, max_retries=0)


def direct(stack: Stack, region: str) -> OpenAI:
    return OpenAI(base_url=stack.region_urls[region] + "/openai/v1/", api_key=STATIC_TOKEN, max_retries=0)


def physical(stack: Stack, region: str) -> str:
    return next(r.physical for r in stack.regions if r.name == region)


def fill(stack: Stack, region: str, leave: int) -> None:
    """Spend a region's token window behind the gateway's back, leaving about `leave` tokens."""

    def spend(max_tokens: int) -> int:
        body = {"messages": [{"role": "user", "content": "x"}], "max_tokens": max_tokens}  # prompt: 1 + 4 tokens
        request = urllib.request.Request(
            f"{stack.region_urls[region]}/openai/deployments/{physical(stack, region)}/chat/completions"
            "?api-version=2024-10-21",
            data=json.dumps(body).encode(),
            headers={"authorization": f"Bearer {STATIC_TOKEN}", "content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.headers["x-ratelimit-remaining-tokens"])

    remaining = spend(1)
    spend(max(1, remaining - 5 - leave))


def free_fractions(stack: Stack, index: int = 0) -> dict[str, float]:
    return {h["name"]: h["free_tokens"] / h["tpm"] for h in stack.status(index)["deployments"][CHAT]}


def test_without_affinity_a_response_continued_in_another_region_is_404(stack: Stack) -> None:
    first = direct(stack, "eastus").responses.create(model=physical(stack, "eastus"), input="hi", max_output_tokens=2)
    with pytest.raises(openai.NotFoundError) as caught:
        direct(stack, "westus").responses.create(
            model=physical(stack, "westus"), input="more", previous_response_id=first.id
        )
    assert caught.value.body["code"] == "previous_response_not_found"  # type: ignore[index]


def test_a_continuation_goes_home_even_when_home_is_the_most_loaded(stack: Stack) -> None:
    client = gateway(stack)
    raw = client.responses.with_raw_response.create(model=CHAT, input="hello", max_output_tokens=5)
    first, home = raw.parse(), raw.headers["x-gateway-backend"]
    assert first.output_text
    fill(stack, home, leave=REGIONS[0].tpm // 10)
    previous = first.id
    for turn in range(3):
        raw = client.responses.with_raw_response.create(
            model=CHAT, input="and then?", max_output_tokens=5, previous_response_id=previous
        )
        assert raw.headers["x-gateway-backend"] == home
        assert raw.headers["x-ms-region"] == home
        previous = raw.parse().id
        if turn == 0:
            # Home's answer told the gateway how little it has left: plain balancing would avoid it now.
            fractions = free_fractions(stack)
            assert min(fractions, key=fractions.__getitem__) == home, fractions
    fetched = client.responses.with_raw_response.retrieve(first.id)
    assert fetched.headers["x-gateway-backend"] == home and fetched.parse().id == first.id
    deleted = client.responses.with_raw_response.delete(previous)
    assert deleted.headers["x-gateway-backend"] == home
    with pytest.raises(openai.NotFoundError):  # home's own 404, passed through: it no longer exists
        client.responses.retrieve(previous)


def test_a_streamed_response_is_recorded_from_its_created_event(stack: Stack) -> None:
    client = gateway(stack)
    raw = client.responses.with_raw_response.create(model=CHAT, input="hello", max_output_tokens=3, stream=True)
    events = list(raw.parse())
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    response_id = events[0].response.id  # type: ignore[union-attr]
    home = raw.headers["x-gateway-backend"]
    for _ in range(3):
        again = client.responses.with_raw_response.create(
            model=CHAT, input="more", max_output_tokens=2, previous_response_id=response_id
        )
        assert again.headers["x-gateway-backend"] == home


def test_an_unknown_response_id_is_404_without_asking_any_region(stack: Stack) -> None:
    client = gateway(stack)
    admitted = _admitted(stack)
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.retrieve("resp_unknown")
    assert caught.value.body == {  # type: ignore[comparison-overlap]
        "code": "not_found",
        "message": "No response found with id 'resp_unknown'.",
        "type": "invalid_request_error",
    }
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=CHAT, input="x", previous_response_id="resp_unknown")
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model=CHAT, input="x", previous_response_id="../etc")
    assert _admitted(stack) == admitted


def _admitted(stack: Stack) -> int:
    return sum(
        d["admitted_requests"] for r in stack.regions for d in stack.region_stats(r.name)["deployments"].values()
    )


def test_a_session_sticks_while_its_host_has_headroom_and_moves_once(stack: Stack) -> None:
    client = gateway(stack)

    def backend(session: str | None) -> str:
        headers = {"x-session-id": session} if session else {}
        raw = client.chat.completions.with_raw_response.create(
            model=CHAT, messages=MESSAGES, max_tokens=5, extra_headers=headers
        )
        return raw.headers["x-gateway-backend"]

    assert len({backend(None) for _ in range(12)}) > 1  # without a session: spread
    stuck = {backend("conversation-1") for _ in range(8)}
    assert len(stuck) == 1
    (first,) = stuck

    fill(stack, first, leave=0)  # saturated: it answers 429, the gateway moves the session
    moved_to = backend("conversation-1")
    assert moved_to != first
    time.sleep(60 / TIME_SCALE + 0.5)  # the old host has headroom again: the move holds all the same
    assert {backend("conversation-1") for _ in range(6)} == {moved_to}
    moves = [line for line in _log(stack).splitlines() if ":conversation-1 moved" in line]
    assert len(moves) == 1, moves


def _log(stack: Stack, index: int = 0) -> str:
    return (stack.workdir / f"host-{index}.log").read_text(errors="replace")


def test_when_home_is_down_the_answer_is_503_naming_it_never_another_region(stack: Stack) -> None:
    client = gateway(stack)
    raw = client.responses.with_raw_response.create(model=CHAT, input="hello", max_output_tokens=2)
    response_id, home = raw.parse().id, raw.headers["x-gateway-backend"]
    stack.set_faults(home, down=True)
    try:
        # The read first: a connection the outage cut may still sit in the gateway's pool, and only an idempotent
        # request may be re-sent on a fresh one; a create that went out on it could have reached the region.
        for call in (
            lambda: client.responses.retrieve(response_id),
            lambda: client.responses.create(model=CHAT, input="more", previous_response_id=response_id),
        ):
            with pytest.raises(openai.APIStatusError) as caught:
                call()
            assert caught.value.status_code == 503
            assert int(caught.value.response.headers["retry-after"]) >= 1
            assert caught.value.body["code"] == "RegionUnavailable"  # type: ignore[index]
            assert f"lives in region {home}" in caught.value.body["message"]  # type: ignore[index]
    finally:
        stack.set_faults(home, down=False)


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    with Azurite(tmp_path_factory.mktemp("azurite")) as instance:
        yield instance


def test_instances_share_affinity_through_table_storage(tmp_path: Path, azurite: Azurite) -> None:
    with Stack(
        tmp_path,
        REGIONS,
        TIME_SCALE,
        instances=2,
        table_connection_string=azurite.connection_string,
        simulator_args=FAST,
    ) as shared:
        raw = gateway(shared, 0).responses.with_raw_response.create(model=CHAT, input="hello", max_output_tokens=2)
        response_id, home = raw.parse().id, raw.headers["x-gateway-backend"]
        other = gateway(shared, 1)
        for _ in range(3):
            again = other.responses.with_raw_response.create(
                model=CHAT, input="more", max_output_tokens=2, previous_response_id=response_id
            )
            assert again.headers["x-gateway-backend"] == home
        assert other.responses.with_raw_response.retrieve(response_id).headers["x-gateway-backend"] == home
        with pytest.raises(openai.NotFoundError):
            other.responses.retrieve("resp_never_made")
