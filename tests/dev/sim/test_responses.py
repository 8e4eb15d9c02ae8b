"""The Responses API on both surfaces, through the SDK; objects live in the region that made them."""

from __future__ import annotations

import asyncio

import aiohttp
import openai
import pytest

from dev.simulator import SimDeployment
from shared.clock import ScaledClock
from tests.dev.sim.conftest import AUTH, PREVIEW, Clients, Launch, post


@pytest.mark.asyncio
async def test_responses_live_in_the_region_that_created_them(launch: Launch, sdk: Clients) -> None:
    """The Responses API on v1 through the SDK: create, continue, stream, get, delete; other regions say 404."""
    _, home = await launch(SimDeployment("gpt-4o", 10_000, rpm=600))
    _, elsewhere = await launch(SimDeployment("gpt-4o", 10_000, rpm=600))
    here, there = sdk.v1(home), sdk.v1(elsewhere)
    first = await here.responses.create(model="gpt-4o", input="hello", max_output_tokens=3)
    assert first.id.startswith("resp_") and first.output_text == "alpha bravo charlie"
    assert first.usage is not None and first.usage.total_tokens == 2 + 3
    second = await here.responses.create(model="gpt-4o", input="more", previous_response_id=first.id)
    assert second.previous_response_id == first.id
    assert (await here.responses.retrieve(first.id)).id == first.id

    with pytest.raises(openai.NotFoundError) as caught:
        await there.responses.create(model="gpt-4o", input="more", previous_response_id=first.id)
    assert caught.value.body["code"] == "previous_response_not_found"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        await there.responses.retrieve(first.id)

    stream = await here.responses.create(model="gpt-4o", input="hi", max_output_tokens=2, stream=True)
    events = [event async for event in stream]
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(10))
    streamed = events[0].response.id  # type: ignore[union-attr]
    assert (await here.responses.retrieve(streamed)).output_text == "alpha bravo"

    await here.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        await here.responses.retrieve(first.id)


@pytest.mark.asyncio
async def test_a_chain_of_three_turns_on_the_classic_surface(launch: Launch, sdk: Clients) -> None:
    """AzureOpenAI(api_version=...) calls /openai/responses?api-version=...; another region knows none of it."""
    region, home = await launch()
    _, elsewhere = await launch(name="westus")
    here, there = sdk.azure(home), sdk.azure(elsewhere)
    turns = []
    for prompt in ("first", "second", "third"):
        previous = turns[-1].id if turns else None
        turns.append(await here.responses.create(model="gpt-4o", input=prompt, previous_response_id=previous))
    assert [t.previous_response_id for t in turns] == [None, turns[0].id, turns[1].id]
    assert (await here.responses.retrieve(turns[2].id)).output_text == turns[2].output_text
    items = await here.responses.input_items.list(turns[1].id)
    assert [(i.type, i.content[0].text) for i in items.data] == [("message", "second")]  # type: ignore[union-attr]
    assert region.snapshot()["calls"]["POST /openai/responses"] == 3
    assert region.snapshot()["objects"]["response"] == 3

    for call in (
        lambda: there.responses.retrieve(turns[0].id),
        lambda: there.responses.input_items.list(turns[0].id),
        lambda: there.responses.delete(turns[0].id),
    ):
        with pytest.raises(openai.NotFoundError) as caught:
            await call()
        assert caught.value.body == {  # type: ignore[comparison-overlap]
            "code": "not_found",
            "message": f"No response found with id {turns[0].id!r}.",
            "type": "invalid_request_error",
            "param": None,
        }
    with pytest.raises(openai.NotFoundError) as previous_missing:
        await there.responses.create(model="gpt-4o", input="fourth", previous_response_id=turns[2].id)
    assert previous_missing.value.body["code"] == "previous_response_not_found"  # type: ignore[index]

    await here.responses.delete(turns[0].id)
    with pytest.raises(openai.NotFoundError):
        await here.responses.retrieve(turns[0].id)


@pytest.mark.asyncio
async def test_the_classic_surface_streams_and_needs_api_version(
    launch: Launch, sdk: Clients, session: aiohttp.ClientSession
) -> None:
    _, url = await launch()
    stream = await sdk.azure(url).responses.create(model="gpt-4o", input="hi", max_output_tokens=3, stream=True)
    events = [event async for event in stream]
    assert events[-1].type == "response.completed" and events[-1].response.output_text == "alpha bravo charlie"  # type: ignore[union-attr]
    async with session.post(f"{url}/openai/responses?api-version={PREVIEW}", json=STREAMED, headers=AUTH) as resp:
        raw = await resp.text()
    assert raw.rstrip().splitlines()[-1].startswith('data: {"type":"response.completed"') and "[DONE]" not in raw
    status, _, error = await post(session, f"{url}/openai/responses", STREAMED)
    assert (status, error["error"]["code"]) == (400, "MissingApiVersionParameter")


STREAMED = {"model": "gpt-4o", "input": "hi", "max_output_tokens": 2, "stream": True}


@pytest.mark.asyncio
async def test_a_conversation_collects_the_turns_and_must_live_here(launch: Launch, sdk: Clients) -> None:
    _, home = await launch()
    _, elsewhere = await launch(name="westus")
    here, there = sdk.v1(home), sdk.v1(elsewhere)
    conversation = await here.conversations.create(items=[{"type": "message", "role": "user", "content": "hello"}])
    first = await here.responses.create(model="gpt-4o", input="more", conversation=conversation.id)
    second = await here.responses.create(model="gpt-4o", input="again", conversation={"id": conversation.id})
    assert first.conversation is not None and first.conversation.id == conversation.id
    items = await here.conversations.items.list(conversation.id, order="asc")
    texts = [item.content[0].text for item in items.data]  # type: ignore[union-attr]
    assert texts == ["hello", "more", first.output_text, "again", second.output_text]

    with pytest.raises(openai.NotFoundError) as caught:
        await there.responses.create(model="gpt-4o", input="x", conversation=conversation.id)
    assert caught.value.body["message"] == f"No conversation found with id {conversation.id!r}."  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        await here.responses.create(
            model="gpt-4o", input="x", conversation=conversation.id, previous_response_id=first.id
        )


@pytest.mark.asyncio
async def test_encrypted_reasoning_only_decrypts_in_the_region_that_made_it(launch: Launch, sdk: Clients) -> None:
    _, home = await launch()
    _, elsewhere = await launch(name="westus")
    here, there = sdk.v1(home), sdk.v1(elsewhere)
    first = await here.responses.create(
        model="gpt-4o", input="think", include=["reasoning.encrypted_content"], store=False
    )
    reasoning = first.output[0]
    assert reasoning.type == "reasoning" and reasoning.id.startswith("rs_") and reasoning.summary == []
    assert reasoning.encrypted_content and reasoning.id not in reasoning.encrypted_content
    assert first.output_text  # the answer follows the reasoning item
    carried = [reasoning.model_dump(exclude_none=True), {"role": "user", "content": "go on"}]
    assert (await here.responses.create(model="gpt-4o", input=carried)).status == "completed"  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError) as caught:
        await there.responses.create(model="gpt-4o", input=carried)  # type: ignore[arg-type]
    assert caught.value.body["code"] == "invalid_encrypted_content"  # type: ignore[index]
    assert f"The encrypted content for item {reasoning.id} could not be verified" in caught.value.body["message"]  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        await here.responses.retrieve(first.id)  # store=False: nothing kept

    stored = await here.responses.create(model="gpt-4o", input="think", include=["reasoning.encrypted_content"])
    by_id = [{"type": "reasoning", "id": stored.output[0].id, "summary": []}, {"role": "user", "content": "go on"}]
    assert (await here.responses.create(model="gpt-4o", input=by_id)).status == "completed"  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError):
        await there.responses.create(model="gpt-4o", input=by_id)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_a_background_response_completes_later_and_can_be_cancelled(launch: Launch, sdk: Clients) -> None:
    _, quick = await launch()  # ManualClock, no latency: the background work finishes at once
    _, slow = await launch(name="westus", clock=ScaledClock(1.0), per_token=100.0)  # would take 1600 s
    done = await sdk.v1(quick).responses.create(model="gpt-4o", input="later", background=True)
    assert (done.status, done.output) == ("queued", [])
    await asyncio.sleep(0)  # the region's background task runs
    finished = await sdk.v1(quick).responses.retrieve(done.id)
    assert finished.status == "completed" and finished.output_text
    assert (await sdk.v1(quick).responses.cancel(done.id)).status == "completed"  # idempotent once finished
    with pytest.raises(openai.BadRequestError):
        await sdk.v1(quick).responses.cancel((await sdk.v1(quick).responses.create(model="gpt-4o", input="x")).id)

    pending = await sdk.v1(slow).responses.create(model="gpt-4o", input="later", background=True)
    assert (await sdk.v1(slow).responses.cancel(pending.id)).status == "cancelled"
    assert (await sdk.v1(slow).responses.retrieve(pending.id)).status == "cancelled"
