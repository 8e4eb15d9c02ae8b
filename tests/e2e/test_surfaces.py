"""Every stateful surface goes home, on both client styles, and affinity heals itself (issue 14).

Simulated regions keep each kind of object where it was made, as Azure does: straight to another region
a follow-up is a 404. Through the gateway, with `AzureOpenAI(api_version=...)` (the Azure-style surface) and
`OpenAI(base_url=.../openai/v1/)`, every follow-up lands on the home region, even while it is the busiest;
home down is a 503 naming it; and with no record at all the gateway finds the object again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from dev.stack import CHAT, STATIC_TOKEN, RegionSpec, Stack
from tests.e2e.conftest import TIME_SCALE

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK marks the Assistants API deprecated

PREVIEW = "2025-03-01-preview"
REGIONS = (RegionSpec("eastus", 60_000), RegionSpec("westus", 90_000), RegionSpec("uksouth", 120_000))
FAST = ("--ttft", "0", "--per-token", "0")
LOOKUP = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    admins = [{"name": "ops", "admin": True}]
    with Stack(tmp_path_factory.mktemp("surfaces"), REGIONS, TIME_SCALE, simulator_args=FAST, clients=admins) as s:
        yield s


def azure(stack: Stack, index: int = 0, key: str | None = None) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=stack.gateway_urls[index], api_key=key or stack.client_key, api_version=PREVIEW, max_retries=0
    )


def v1(stack: Stack, index: int = 0, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=stack.gateway_urls[index] + "/openai/v1/", api_key=key or stack.client_key, max_retries=0
    )


STYLES: dict[str, Callable[..., Any]] = {"azure": azure, "v1": v1}


def backend(raw: Any) -> str:
    return str(raw.headers["x-gateway-backend"])


def busiest(stack: Stack, region: str) -> None:
    """Make `region` the most loaded, with a little room left: balancing alone would avoid it."""
    spec = next(r for r in stack.regions if r.name == region)
    direct = openai.AzureOpenAI(
        azure_endpoint=stack.region_urls[region], azure_ad_token=STATIC_TOKEN, api_version="2024-10-21", max_retries=0
    )
    direct.chat.completions.create(
        model=spec.physical, messages=[{"role": "user", "content": "x"}], max_tokens=spec.tpm - 3000
    )  # type: ignore[arg-type]


@pytest.mark.parametrize("style", ["azure", "v1"])
def test_a_responses_chain_of_three_turns_stays_home_even_when_home_is_busiest(stack: Stack, style: str) -> None:
    client = STYLES[style](stack)
    first = client.responses.with_raw_response.create(model=CHAT, input="hello", max_output_tokens=5)
    home, response = backend(first), first.parse()
    busiest(stack, home)
    for turn in ("more", "and more"):
        raw = client.responses.with_raw_response.create(
            model=CHAT, input=turn, max_output_tokens=5, previous_response_id=response.id
        )
        assert backend(raw) == home
        response = raw.parse()
    items = client.responses.input_items.with_raw_response.list(response.id)
    assert backend(items) == home and items.parse().data
    again = client.responses.with_raw_response.retrieve(response.id)
    assert backend(again) == home and again.parse().previous_response_id is not None
    other = next(r.name for r in REGIONS if r.name != home)
    straight = openai.OpenAI(base_url=stack.region_urls[other] + "/openai/v1/", api_key="k", max_retries=0)
    with pytest.raises(openai.NotFoundError):  # without the gateway: another region has never heard of it
        straight.responses.retrieve(response.id)


def test_a_conversation_and_the_responses_in_it_go_home(stack: Stack) -> None:
    client = v1(stack)
    created = client.conversations.with_raw_response.create(
        items=[{"type": "message", "role": "user", "content": "hi"}]
    )
    home, conversation = backend(created), created.parse()
    for _ in range(3):
        raw = client.responses.with_raw_response.create(
            model=CHAT, input="next", max_output_tokens=3, conversation=conversation.id
        )
        assert backend(raw) == home
    items = client.conversations.items.with_raw_response.list(conversation.id)
    assert backend(items) == home and len(items.parse().data) >= 2
    assert backend(client.conversations.with_raw_response.delete(conversation.id)) == home


def test_an_assistant_thread_and_streamed_run_with_tool_outputs_go_home(stack: Stack) -> None:
    client = azure(stack)
    created = client.beta.assistants.with_raw_response.create(model=CHAT, tools=[LOOKUP])  # type: ignore[list-item]
    home, assistant = backend(created), created.parse()
    thread = {"messages": [{"role": "user", "content": "look it up"}]}
    events = list(client.beta.threads.create_and_run(assistant_id=assistant.id, thread=thread, stream=True))  # type: ignore[arg-type]
    assert events[-1].event == "thread.run.requires_action"
    run = events[-1].data
    [call] = run.required_action.submit_tool_outputs.tool_calls  # type: ignore[union-attr]
    finished = list(
        client.beta.threads.runs.submit_tool_outputs(
            run.id,
            thread_id=run.thread_id,  # type: ignore[union-attr]
            tool_outputs=[{"tool_call_id": call.id, "output": "42"}],
            stream=True,
        )
    )
    assert finished[-1].event == "thread.run.completed"
    thread_id = run.thread_id  # type: ignore[union-attr]
    for raw in (
        client.beta.threads.messages.with_raw_response.list(thread_id),
        client.beta.threads.runs.steps.with_raw_response.list(run.id, thread_id=thread_id),
        client.beta.threads.runs.with_raw_response.retrieve(run.id, thread_id=thread_id),
        client.beta.threads.with_raw_response.retrieve(thread_id),  # the thread the run made was recorded
    ):
        assert backend(raw) == home
    assert client.beta.threads.messages.list(thread_id).data[0].role == "assistant"


@pytest.mark.parametrize("style", ["azure", "v1"])
def test_a_vector_store_with_a_file_and_a_search_go_where_the_file_lives(stack: Stack, style: str) -> None:
    client = STYLES[style](stack)
    upload = client.files.with_raw_response.create(file=("notes.txt", b"the quarterly report"), purpose="assistants")
    home, file = backend(upload), upload.parse()
    store = client.vector_stores.with_raw_response.create(name="docs", file_ids=[file.id])
    assert backend(store) == home
    found = client.vector_stores.with_raw_response.search(store.parse().id, query="quarterly")
    assert backend(found) == home and found.parse().data
    listed = client.vector_stores.files.with_raw_response.list(store.parse().id)
    assert backend(listed) == home and [f.id for f in listed.parse().data] == [file.id]


def test_a_container_file_goes_home(stack: Stack) -> None:
    client = v1(stack)
    container = client.containers.with_raw_response.create(name="sandbox")
    home, cid = backend(container), container.parse().id
    uploaded = client.containers.files.with_raw_response.create(cid, file=("script.py", b"print(1)\n"))
    assert backend(uploaded) == home
    content = client.containers.files.content.with_raw_response.retrieve(uploaded.parse().id, container_id=cid)
    assert backend(content) == home and content.content == b"print(1)\n"


def test_objects_of_two_regions_in_one_request_are_refused_saying_so(stack: Stack) -> None:
    client = v1(stack)
    homes: dict[str, str] = {}
    for _ in range(20):  # uploads spread over the regions: find two that landed apart
        raw = client.files.with_raw_response.create(file=("a.txt", b"x"), purpose="assistants")
        homes.setdefault(backend(raw), raw.parse().id)
        if len(homes) == 2:
            break
    assert len(homes) == 2
    with pytest.raises(openai.BadRequestError) as caught:
        client.vector_stores.create(name="both", file_ids=list(homes.values()))
    assert caught.value.body["code"] == "objects_in_different_regions"  # type: ignore[index]
    assert all(region in caught.value.body["message"] for region in homes)  # type: ignore[index]


def test_home_down_is_a_503_naming_it(stack: Stack) -> None:
    client = v1(stack)
    raw = client.vector_stores.with_raw_response.create(name="far")
    home, store = backend(raw), raw.parse()
    client.vector_stores.retrieve(store.id)  # warm: the next call must fail because home is down, nothing else
    stack.set_faults(home, down=True)
    try:
        for call in (
            lambda: client.vector_stores.retrieve(store.id),
            lambda: client.vector_stores.search(store.id, query="x"),
        ):
            with pytest.raises(openai.APIStatusError) as caught:
                call()
            assert caught.value.status_code == 503
            assert caught.value.body["code"] == "RegionUnavailable"  # type: ignore[index]
            assert f"lives in region {home}" in caught.value.body["message"]  # type: ignore[index]
    finally:
        stack.set_faults(home, down=False)


def lookups(stack: Stack, object_id: str) -> int:
    """GETs of the object the regions saw (the gateway's discovery asks every region once)."""
    return sum(
        count
        for r in stack.regions
        for route, count in stack.region_stats(r.name)["calls"].items()
        if route.startswith("GET ") and route.endswith("{vector_store_id}")
    )


def test_with_no_record_the_follow_ups_find_home_and_the_record_is_back(tmp_path: Path) -> None:
    admins = [{"name": "ops", "admin": True}]
    with Stack(tmp_path, REGIONS, TIME_SCALE, instances=2, simulator_args=FAST, clients=admins) as pair:
        ops = pair.keys["ops"]
        made = v1(pair, 0, ops).vector_stores.with_raw_response.create(name="kept")
        home, store = backend(made), made.parse()
        fresh = v1(pair, 1, ops)  # another instance, with an empty affinity store: it has no record of the store
        before = lookups(pair, store.id)
        found = fresh.vector_stores.with_raw_response.retrieve(store.id)
        assert backend(found) == home
        assert lookups(pair, store.id) - before == len(REGIONS) + 1  # asked everyone once, then the real call
        again = fresh.vector_stores.with_raw_response.search(store.id, query="x")
        assert backend(again) == home
        assert lookups(pair, store.id) - before == len(REGIONS) + 1  # recorded: not looked for again
        # Nobody knows whose it is now: only admins reach it (the tenant rule).
        with pytest.raises(openai.NotFoundError):
            v1(pair, 1).vector_stores.retrieve(store.id)
        # An id no region has is a 404, and is not looked for again for a while.
        with pytest.raises(openai.NotFoundError):
            fresh.vector_stores.retrieve("vs_nowhere")
        with pytest.raises(openai.NotFoundError):
            fresh.vector_stores.retrieve("vs_nowhere")


def test_a_delete_removes_the_record(stack: Stack) -> None:
    client = v1(stack)
    raw = client.vector_stores.with_raw_response.create(name="gone soon")
    store = raw.parse()
    assert client.vector_stores.delete(store.id).deleted
    before = lookups(stack, store.id)
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.retrieve(store.id)
    assert lookups(stack, store.id) - before == len(REGIONS)  # no record: every region was asked, none has it
