"""Failure containment, end to end: one bad request, one failing dependency or one departed client costs
nobody else anything. Real processes on loopback: simulated regions, the dev host, the official SDK.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import openai
import pytest

from dev import load
from dev.stack import CHAT, STATIC_TOKEN, Stack
from tests.e2e.conftest import TIME_SCALE, fresh_stack

MAX_TOKENS = 400
DURATION = 120.0
MESSAGES = [{"role": "user", "content": "hi"}]


# Regions that answer at once: a test that fills a window directly must finish within its (compressed) minute.
INSTANT = ("--ttft", "0", "--per-token", "0")


@pytest.fixture
def regions(tmp_path: Path) -> Iterator[Stack]:
    with fresh_stack(tmp_path) as stack:
        yield stack


@pytest.fixture
def instant(tmp_path: Path) -> Iterator[Stack]:
    with fresh_stack(tmp_path, simulator_args=INSTANT) as stack:
        yield stack


def rate_for(stack: Stack, fraction: float) -> float:
    return fraction * sum(r.tpm for r in stack.regions) / 60.0 / load.request_cost(MAX_TOKENS)


def totals(stack: Stack, key: str) -> dict[str, int]:
    return {r.name: sum(d[key] for d in stack.region_stats(r.name)["deployments"].values()) for r in stack.regions}


def access_lines(stack: Stack, index: int = 0) -> list[dict[str, Any]]:
    """The gateway.access log lines the dev host wrote."""
    lines = (stack.workdir / f"host-{index}.log").read_text(errors="replace").splitlines()
    return [json.loads(line.split("gateway.access: ", 1)[1]) for line in lines if "gateway.access: {" in line]


def sync_client(stack: Stack, **options: Any) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=stack.url, api_key=stack.client_key, api_version=load.API_VERSION, max_retries=0, **options
    )


def poll(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


# --- a request judged by its own cost ------------------------------------------------------------------------


async def test_requests_larger_than_every_host_get_a_400_at_once_and_cost_the_others_nothing(regions: Stack) -> None:
    stack = regions
    client = load.gateway_client(stack.url, stack.client_key)
    giants: list[tuple[int, str, float]] = []

    async def giant() -> None:
        started = time.perf_counter()
        try:
            await client.chat.completions.create(model=CHAT, messages=MESSAGES, max_tokens=40_000)  # type: ignore[arg-type]
            giants.append((200, "", 0.0))
        except openai.APIStatusError as exc:
            giants.append((exc.status_code, exc.body["code"], time.perf_counter() - started))  # type: ignore[index]

    async def hostile() -> None:
        for _ in range(100):
            await giant()
            await asyncio.sleep(DURATION / TIME_SCALE / 100)

    targets = [load.Target(client, CHAT, "gateway")]
    others, _ = await asyncio.gather(
        load.run_load(
            targets, rate=rate_for(stack, 0.70), duration=DURATION, time_scale=TIME_SCALE, max_tokens=MAX_TOKENS
        ),
        hostile(),
    )
    latencies = sorted(seconds for _, _, seconds in giants)
    print(
        f"\n100 requests larger than every host: {sorted({(s, c) for s, c, _ in giants})}, p50 "
        f"{latencies[50] * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms; the others at 70%: {dict(others.statuses)}"
    )
    assert {(status, code) for status, code, _ in giants} == {(400, "request_too_large")}
    assert others.statuses == {200: others.sent}, others.errors
    assert sum(totals(stack, "throttled_quota").values()) == 0
    assert sum(totals(stack, "admitted_requests").values()) == others.sent  # no giant reached any region
    poll(lambda: len([r for r in access_lines(stack) if r["error"] == "request_too_large"]) == 100)
    refused = [r for r in access_lines(stack) if r["error"] == "request_too_large"]
    assert all(r["attempts"] == [] for r in refused)


async def test_requests_larger_than_a_host_never_reach_it(regions: Stack) -> None:
    stack = regions  # eastus 10k, westus 20k, uksouth 30k TPM
    client = load.gateway_client(stack.url, stack.client_key)
    results = []
    for _ in range(4):  # 15k each: westus takes one a minute, uksouth two
        response = await client.chat.completions.with_raw_response.create(
            model=CHAT,
            messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=15_000,
        )
        results.append(response.headers["x-gateway-backend"])
    assert set(results) <= {"westus", "uksouth"}
    assert totals(stack, "admitted_requests")["eastus"] == 0
    assert totals(stack, "throttled_quota")["eastus"] == 0


def fill_directly(stack: Stack, leave: int) -> None:
    """Use each region's window straight at the region (another consumer of the same deployments)."""
    for region in stack.regions:
        direct = openai.AzureOpenAI(
            azure_endpoint=stack.region_urls[region.name],
            azure_ad_token=STATIC_TOKEN,
            api_version=load.API_VERSION,
            max_retries=0,
        )
        direct.chat.completions.create(model=region.physical, messages=MESSAGES, max_tokens=region.tpm - leave - 5)  # type: ignore[arg-type]


def test_a_token_limit_429_holds_back_only_requests_that_large(instant: Stack) -> None:
    """Every region has 3,000 tokens left that the gateway cannot see; a 9,000-token request meets a token-limit
    429 everywhere. On the old main that cooled every host down for everyone: ordinary requests got 429 too."""
    stack = instant
    fill_directly(stack, leave=3_000)
    client = sync_client(stack)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=CHAT, messages=MESSAGES, max_tokens=9_000)  # type: ignore[arg-type]
    assert float(caught.value.response.headers["retry-after-ms"]) > 0
    assert sum(totals(stack, "throttled_quota").values()) == 3  # each region said no once
    small = [
        client.chat.completions.with_raw_response.create(model=CHAT, messages=MESSAGES, max_tokens=200)  # type: ignore[arg-type]
        for _ in range(10)
    ]
    assert all(r.status_code == 200 for r in small)
    again = stack.status()["deployments"][CHAT]
    assert all(h["cooldown_reason"] == "" and h["token_blocks"] for h in again)


# --- a client that is gone costs nothing more -----------------------------------------------------------------


def wait_idle(stack: Stack) -> None:
    poll(lambda: stack.status()["in_flight"] == 0)


def test_a_client_that_leaves_while_awaiting_headers_releases_its_place(tmp_path: Path) -> None:
    with fresh_stack(tmp_path, routing={"max_in_flight": 3}) as stack:
        for region in stack.regions:
            stack.set_faults(region.name, slow=30.0)  # a second of real time before any answer
        impatient = sync_client(stack, timeout=0.2)
        for _ in range(6):  # twice the in-flight cap: leaks would lock the gateway
            with pytest.raises(openai.APITimeoutError):
                impatient.chat.completions.create(model=CHAT, messages=MESSAGES, max_tokens=5)  # type: ignore[arg-type]
        wait_idle(stack)
        for region in stack.regions:
            stack.set_faults(region.name, slow=0.0)
        assert (
            sync_client(stack)
            .chat.completions.with_raw_response.create(
                model=CHAT,
                messages=MESSAGES,  # type: ignore[arg-type]
                max_tokens=5,
            )
            .status_code
            == 200
        )
        gone = [r for r in access_lines(stack) if r["ending"] == "client_gone"]
        assert len(gone) == 6
        log = (stack.workdir / "host-0.log").read_text()
        assert "Traceback" not in log and " ERROR " not in log


def test_a_client_that_leaves_while_waiting_for_room_is_never_sent_upstream(tmp_path: Path) -> None:
    with fresh_stack(tmp_path, routing={"wait_budget_seconds": 90.0}, simulator_args=INSTANT) as stack:
        fill_directly(stack, leave=0)  # every region is full for the next minute
        # The gateway learns it from the 429s of one request, then waits for room.
        with pytest.raises(openai.RateLimitError):
            sync_client(stack).chat.completions.create(model=CHAT, messages=MESSAGES, max_tokens=50)  # type: ignore[arg-type]
        before = sum(totals(stack, "admitted_requests").values()) + sum(totals(stack, "throttled_quota").values())
        impatient = sync_client(stack, timeout=0.3)  # leaves after 9 of the 90 simulated seconds it may wait
        for _ in range(5):
            with pytest.raises(openai.APITimeoutError):
                impatient.chat.completions.create(model=CHAT, messages=MESSAGES, max_tokens=50)  # type: ignore[arg-type]
        wait_idle(stack)
        time.sleep(0)  # nothing is pending: the gateway's waits were cancelled, not left to run out
        after = sum(totals(stack, "admitted_requests").values()) + sum(totals(stack, "throttled_quota").values())
        assert after == before
        assert len([r for r in access_lines(stack) if r["ending"] == "client_gone"]) == 5


def test_a_hang_up_during_the_upload_is_logged_at_info_not_a_500(regions: Stack) -> None:
    stack = regions
    url = urlsplit(stack.url)
    with socket.create_connection((url.hostname, url.port)) as sock:
        sock.sendall(
            f"POST /openai/deployments/{CHAT}/chat/completions?api-version={load.API_VERSION} HTTP/1.1\r\n"
            f"Host: {url.netloc}\r\napi-key: {stack.client_key}\r\ncontent-type: application/json\r\n"
            "content-length: 100000\r\n\r\n".encode()
            + b'{"messages": [{"role": "user", "content": "'
            + b"x" * 5000
        )
    poll(lambda: any(r["ending"] == "client_gone" for r in access_lines(stack)))
    log = (stack.workdir / "host-0.log").read_text()
    assert "Traceback" not in log and " ERROR " not in log
    assert "disconnected before its answer" in log
    assert sum(totals(stack, "admitted_requests").values()) == 0


# --- retry safety: timeouts that are what they say -------------------------------------------------------------


def test_a_slow_generation_is_not_mistaken_for_an_idle_stream(tmp_path: Path) -> None:
    """Headers after 30 simulated seconds, stream idle timeout 2: one generation, charged once."""
    with fresh_stack(tmp_path, routing={"stream_idle_timeout_seconds": 2.0}) as stack:
        for region in stack.regions:
            stack.set_faults(region.name, slow=30.0)
        response = sync_client(stack, timeout=30).chat.completions.create(model=CHAT, messages=MESSAGES, max_tokens=5)  # type: ignore[arg-type]
        assert response.usage is not None and response.usage.completion_tokens == 5
        assert sum(totals(stack, "admitted_requests").values()) == 1
        poll(lambda: any(r["operation"] == "chat/completions" for r in access_lines(stack)))  # written once sent
        [line] = [r for r in access_lines(stack) if r["operation"] == "chat/completions"]
        assert [a["outcome"] for a in line["attempts"]] == ["ok"]


# --- what uses no deployment's limits uses none ------------------------------------------------------------------


def test_file_lists_and_reads_do_not_use_the_deployments_windows(regions: Stack) -> None:
    stack = regions  # request windows: eastus 10, westus 20, uksouth 30 per 10 s
    client = sync_client(stack)
    for _ in range(30):
        client.files.list()
    responses = [
        client.chat.completions.with_raw_response.create(model=CHAT, messages=MESSAGES, max_tokens=5)  # type: ignore[arg-type]
        for _ in range(10)
    ]
    assert all(r.status_code == 200 for r in responses)
    hosts = stack.status()["deployments"][CHAT]
    assert sum(h["free_requests"] for h in hosts) >= 60 - 10


# --- odd input and odd answers ---------------------------------------------------------------------------------


def raw_request(stack: Stack, path: str, body: bytes | None = None, method: str = "POST") -> tuple[int, Any, str]:
    request = urllib.request.Request(
        stack.url + path,
        data=body,
        method=method,
        headers={"api-key": stack.client_key, "content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read().decode()


def test_deeply_nested_json_is_a_400_in_openais_shape(regions: Stack) -> None:
    body = b'{"messages": [{"role": "user", "content": "hi"}], "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    status, _headers, text = raw_request(
        regions, f"/openai/deployments/{CHAT}/chat/completions?api-version=2024-10-21", body
    )
    assert status == 400
    assert json.loads(text)["error"]["code"] == "invalid_json"
    log = (regions.workdir / "host-0.log").read_text()
    assert "Traceback" not in log


def test_a_proxied_answer_has_one_date_and_one_server_header(regions: Stack) -> None:
    body = json.dumps({"messages": MESSAGES, "max_tokens": 3}).encode()
    status, headers, _ = raw_request(
        regions, f"/openai/deployments/{CHAT}/chat/completions?api-version=2024-10-21", body
    )
    assert status == 200
    assert len(headers.get_all("date")) == 1
    assert len(headers.get_all("server") or []) <= 1
    assert headers["x-request-id"]


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/"), ("GET", "/favicon.ico"), ("POST", "/v1/chat"), ("GET", "/api/x")]
)
def test_every_path_outside_the_served_routes_is_an_openai_shaped_404(regions: Stack, method: str, path: str) -> None:
    status, headers, text = raw_request(regions, path, None, method)
    assert status == 404
    assert headers["content-type"].startswith("application/json")
    assert json.loads(text)["error"]["code"] == "NotFound"


# --- a configuration error still gives an app that says what is wrong ------------------------------------------


def test_a_configuration_error_is_served_as_503s_naming_it(tmp_path: Path) -> None:
    with Stack(tmp_path, time_scale=TIME_SCALE, routing={"max_attempts": -1}) as stack:
        for path in ("/healthz", "/readyz", f"/openai/deployments/{CHAT}/chat/completions?api-version=2024-10-21"):
            status, _, text = raw_request(
                stack, path, b"{}" if "openai" in path else None, "POST" if "openai" in path else "GET"
            )
            assert status == 503
            error = json.loads(text)["error"]
            assert error["code"] == "GatewayMisconfigured"
            assert "routing.max_attempts: must be a positive integer" in error["message"]
