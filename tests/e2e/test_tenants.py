"""Tenants, end to end: each client's objects, limits and usage are its own (issue 11).

Clients app-a and app-b hold gateway keys; ops is an admin. Everything goes through the official SDK, on both
client styles.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openai
import pytest

from dev import load
from dev.azurite import Azurite
from dev.stack import CHAT, RegionSpec, Stack
from tests.e2e.conftest import TIME_SCALE

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK marks the Assistants API deprecated

PREVIEW = "2025-03-01-preview"
REGIONS = (RegionSpec("eastus", 60_000), RegionSpec("westus", 90_000), RegionSpec("uksouth", 120_000))
FAST = ("--ttft", "0", "--per-token", "0")
CLIENTS = [{"name": "app-a"}, {"name": "app-b"}, {"name": "ops", "admin": True}]
MAX_TOKENS = 400


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("tenants"), REGIONS, TIME_SCALE, simulator_args=FAST, clients=CLIENTS) as s:
        yield s


def azure(stack: Stack, client: str, index: int = 0) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=stack.gateway_urls[index], api_key=stack.keys[client], api_version=PREVIEW, max_retries=0
    )


def v1(stack: Stack, client: str, index: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.gateway_urls[index] + "/openai/v1/", api_key=stack.keys[client], max_retries=0)


def not_found(call: Callable[[], Any]) -> str:
    with pytest.raises(openai.NotFoundError) as caught:
        call()
    return str(caught.value.body["message"])  # type: ignore[index]


@pytest.mark.parametrize("style", ["azure", "v1"])
def test_another_client_gets_exactly_the_404_of_an_unknown_id_on_every_route(stack: Stack, style: str) -> None:
    make = azure if style == "azure" else v1
    a, b, ops = make(stack, "app-a"), make(stack, "app-b"), make(stack, "ops")
    response = a.responses.create(model=CHAT, input="mine", max_output_tokens=3)
    file = a.files.create(file=("a.jsonl", b'{"x": 1}\n'), purpose="batch")
    batch = a.batches.create(input_file_id=file.id, endpoint="/chat/completions", completion_window="24h")
    store = a.vector_stores.create(name="a-docs")
    attempts: list[Callable[[], Any]] = [
        lambda: b.responses.retrieve(response.id),
        lambda: b.responses.delete(response.id),
        lambda: b.responses.input_items.list(response.id),
        lambda: b.responses.create(model=CHAT, input="steal", previous_response_id=response.id),
        lambda: b.files.retrieve(file.id),
        lambda: b.files.content(file.id),
        lambda: b.files.delete(file.id),
        lambda: b.batches.retrieve(batch.id),
        lambda: b.batches.cancel(batch.id),
        lambda: b.batches.create(input_file_id=file.id, endpoint="/chat/completions", completion_window="24h"),
        lambda: b.vector_stores.retrieve(store.id),
        lambda: b.vector_stores.search(store.id, query="x"),
        lambda: b.vector_stores.delete(store.id),
        lambda: b.vector_stores.create(name="steal", file_ids=[file.id]),
    ]
    for attempt in attempts:
        message = not_found(attempt)
        assert "app-a" not in message  # nothing tells the id exists, let alone whose it is
    # The exact answer for an id that does not exist anywhere:
    assert not_found(lambda: b.files.retrieve("file-doesnotexist0")) == "No file found with id 'file-doesnotexist0'."
    assert not_found(lambda: b.files.retrieve(file.id)) == f"No file found with id {file.id!r}."
    # Lists show only the caller's objects; an admin sees them all.
    assert file.id not in {f.id for f in b.files.list()}
    assert batch.id not in {x.id for x in b.batches.list()}
    assert store.id not in {x.id for x in b.vector_stores.list()}
    assert file.id in {f.id for f in a.files.list()} and file.id in {f.id for f in ops.files.list()}
    assert store.id in {x.id for x in ops.vector_stores.list()}
    # The owner still reaches everything; nothing of b's attempts changed it.
    assert a.files.retrieve(file.id).id == file.id and a.vector_stores.retrieve(store.id).id == store.id
    assert ops.responses.retrieve(response.id).id == response.id


def test_assistants_threads_and_containers_are_their_owners_too(stack: Stack) -> None:
    a, b = azure(stack, "app-a"), azure(stack, "app-b")
    assistant = a.beta.assistants.create(model=CHAT)
    run = a.beta.threads.create_and_run(assistant_id=assistant.id)
    for attempt in (
        lambda: b.beta.assistants.retrieve(assistant.id),
        lambda: b.beta.threads.retrieve(run.thread_id),
        lambda: b.beta.threads.messages.list(run.thread_id),
        lambda: b.beta.threads.runs.retrieve(run.id, thread_id=run.thread_id),
        lambda: b.beta.threads.create_and_run(assistant_id=assistant.id),
    ):
        not_found(attempt)
    assert assistant.id not in {x.id for x in b.beta.assistants.list()}
    a1, b1 = v1(stack, "app-a"), v1(stack, "app-b")
    container = a1.containers.create(name="a-box")
    conversation = a1.conversations.create()
    for attempt in (
        lambda: b1.containers.retrieve(container.id),
        lambda: b1.containers.files.list(container.id),
        lambda: b1.conversations.retrieve(conversation.id),
        lambda: b1.responses.create(model=CHAT, input="x", conversation=conversation.id),
    ):
        not_found(attempt)
    assert container.id not in {x.id for x in b1.containers.list()}


def status(stack: Stack, client: str, index: int = 0) -> dict[str, Any]:
    return stack.status(index, stack.keys[client])


def get(stack: Stack, path: str, client: str, accept: str = "application/json") -> tuple[int, str]:
    request = urllib.request.Request(stack.url + path, headers={"api-key": stack.keys[client], "accept": accept})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_usage_per_client_deployment_and_day_for_admins_as_json_or_csv(stack: Stack) -> None:
    streamed = 0
    for chunk in v1(stack, "app-b").chat.completions.create(
        model=CHAT,
        messages=[{"role": "user", "content": "count"}],
        max_tokens=7,
        stream=True,
        stream_options={"include_usage": True},
    ):
        if chunk.usage is not None:
            streamed = chunk.usage.total_tokens
    today = datetime.fromtimestamp(0, UTC).date()  # the gateway's clock is compressed: ask for every day
    code, text = get(stack, f"/usage?from={today}&to=9999-12-31", "ops")
    assert code == 400 and "366 days" in text
    code, text = get(stack, "/usage", "app-a")
    assert code == 403
    code, text = get(stack, "/usage", "ops")
    assert code == 200
    rows = [r for r in json.loads(text)["data"] if r["client"] == "app-b"]
    assert rows and rows[0]["deployment"] == CHAT
    assert sum(r["total_tokens"] for r in rows) >= streamed > 0
    code, text = get(stack, "/usage", "ops", "text/csv")
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert code == 200 and parsed[0].keys() == {
        "day",
        "client",
        "deployment",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "requests",
    }
    assert {r["client"] for r in parsed} >= {"app-b"}
    view = status(stack, "ops")["clients"]
    assert view["app-b"]["tokens_today"] >= streamed


def cost(max_tokens: int = MAX_TOKENS) -> int:
    return load.request_cost(max_tokens)


async def drive(url: str, key: str, rate: float, duration: float, max_tokens: int = MAX_TOKENS) -> load.LoadResult:
    target = load.Target(load.gateway_client(url, key), CHAT, "gateway")
    return await load.run_load([target], rate=rate, duration=duration, time_scale=TIME_SCALE, max_tokens=max_tokens)


async def test_a_client_limit_holds_across_instances_while_another_client_is_untouched(tmp_path: Path) -> None:
    limited = {"name": "app-a", "limits": {"tpm": 20_000}}
    with (
        Azurite(tmp_path / "azurite") as azurite,
        Stack(
            tmp_path / "stack",
            REGIONS,
            TIME_SCALE,
            instances=2,
            table_connection_string=azurite.connection_string,
            clients=[limited, {"name": "app-b"}],
        ) as pair,
    ):
        minutes = 2.0
        over = 2 * 20_000 / 60 / cost()  # twice app-a's limit, split over both instances
        calm = 0.5 * sum(r.tpm for r in REGIONS) / 60 / cost()
        a0, a1, b = await asyncio.gather(
            drive(pair.gateway_urls[0], pair.keys["app-a"], over / 2, 60 * minutes),
            drive(pair.gateway_urls[1], pair.keys["app-a"], over / 2, 60 * minutes),
            drive(pair.gateway_urls[0], pair.keys["app-b"], calm, 60 * minutes),
        )
        served = a0.tokens_served + a1.tokens_served
        per_minute = served / minutes
        print(f"\napp-a at 2x its 20,000 tpm on two instances: {per_minute:,.0f} tokens/min; app-b: {dict(b.statuses)}")
        assert abs(per_minute - 20_000) <= 0.05 * 20_000 + cost()  # within 5% (and one request's grain)
        assert a0.statuses[429] + a1.statuses[429] > 0
        assert b.statuses == {200: b.sent}, b.errors


async def test_a_low_priority_flood_never_costs_a_normal_client_a_429(tmp_path: Path) -> None:
    clients = [{"name": "batchy", "priority": "low"}, {"name": "app-b"}]
    big = 2_000  # large requests: 210% of the quota in few requests, so one process on compressed time keeps up
    with Stack(tmp_path, REGIONS, TIME_SCALE, clients=clients) as stack:
        aggregate = sum(r.tpm for r in REGIONS) / 60 / cost(big)
        flood, normal = await asyncio.gather(
            drive(stack.url, stack.keys["batchy"], 1.5 * aggregate, 120.0, big),
            drive(stack.url, stack.keys["app-b"], 0.6 * aggregate, 120.0, big),
        )
        print(f"\nlow priority at 150%: {dict(flood.statuses)}; normal at 60%: {dict(normal.statuses)}")
        assert normal.statuses == {200: normal.sent}, normal.errors
        assert flood.statuses[429] > 0 and flood.statuses[200] > 0


async def test_a_daily_quota_counts_real_stream_usage_and_refuses_until_midnight(tmp_path: Path) -> None:
    with Stack(
        tmp_path, REGIONS, TIME_SCALE, clients=[{"name": "metered", "limits": {"tokens_per_day": 300}}]
    ) as stack:
        client = openai.AsyncAzureOpenAI(
            azure_endpoint=stack.url, api_key=stack.keys["metered"], api_version=PREVIEW, max_retries=0
        )
        used = 0
        refused = None
        for _ in range(20):
            try:
                stream = await client.chat.completions.create(
                    model=CHAT, messages=[{"role": "user", "content": "hi"}], max_tokens=50, stream=True
                )
                async for _chunk in stream:
                    pass
            except openai.PermissionDeniedError as exc:
                refused = exc
                break
            used += 1
        assert refused is not None and refused.body["code"] == "quota_exceeded"  # type: ignore[index]
        retry_after = float(refused.response.headers["retry-after"])
        assert 0 < retry_after <= 86_400
        per_stream = 5 + 50  # "hi": 1 token + 4 for the message; 50 generated (the streams carried no usage chunk)
        assert used == -(-300 // per_stream)  # admitted while under the quota, refused once it was spent
        assert status(stack, "local-dev")["clients"]["metered"]["tokens_today"] == used * per_stream  # exactly
