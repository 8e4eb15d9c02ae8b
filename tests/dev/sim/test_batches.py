"""Batches need their input file in the same region."""

from __future__ import annotations

import openai
import pytest

from tests.dev.sim.conftest import VERSION, Clients, Launch


@pytest.mark.asyncio
async def test_a_batch_needs_its_input_file_in_the_same_region(launch: Launch, sdk: Clients) -> None:
    _, home = await launch()
    _, elsewhere = await launch()
    here, there = sdk.azure(home, VERSION), sdk.azure(elsewhere, VERSION)
    file = await here.files.create(file=("in.jsonl", b"{}\n"), purpose="batch")
    batch = await here.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert batch.id.startswith("batch_") and (batch.status, batch.input_file_id) == ("validating", file.id)
    assert (await here.batches.retrieve(batch.id)).id == batch.id
    assert [b.id for b in (await here.batches.list()).data] == [batch.id]
    assert (await here.batches.cancel(batch.id)).status == "cancelling"
    with pytest.raises(openai.NotFoundError):
        await there.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        await there.batches.retrieve(batch.id)
    with pytest.raises(openai.BadRequestError):
        await here.batches.create(input_file_id=file.id, endpoint=7, completion_window="24h")  # type: ignore[arg-type]
