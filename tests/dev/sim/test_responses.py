"""The Responses API on both surfaces, through the SDK; objects live in the region that made them."""

from __future__ import annotations

import openai
import pytest

from dev.simulator import SimDeployment
from tests.dev.sim.conftest import KEY, Launch


@pytest.mark.asyncio
async def test_responses_live_in_the_region_that_created_them(launch: Launch) -> None:
    """The Responses API on v1 through the SDK: create, continue, stream, get, delete; other regions say 404."""
    _, home = await launch(SimDeployment("gpt-4o", 10_000, rpm=600))
    _, elsewhere = await launch(SimDeployment("gpt-4o", 10_000, rpm=600))
    here = openai.AsyncOpenAI(base_url=home + "/openai/v1/", api_key=KEY, max_retries=0)
    there = openai.AsyncOpenAI(base_url=elsewhere + "/openai/v1/", api_key=KEY, max_retries=0)
    try:
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
    finally:
        await here.close()
        await there.close()
