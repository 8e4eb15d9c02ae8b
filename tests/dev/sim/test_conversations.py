"""Conversations and their items, on the v1 surface only (Azure has no api-version form of them)."""

from __future__ import annotations

import aiohttp
import openai
import pytest

from tests.dev.sim.conftest import PREVIEW, Clients, Launch, all_not_found, get


@pytest.mark.asyncio
async def test_a_conversation_and_its_items_live_in_one_region(
    launch: Launch, sdk: Clients, session: aiohttp.ClientSession
) -> None:
    region, home = await launch()
    _, elsewhere = await launch(name="westus")
    here, there = sdk.v1(home), sdk.v1(elsewhere)
    conversation = await here.conversations.create(
        items=[{"type": "message", "role": "user", "content": "hi"}], metadata={"topic": "demo"}
    )
    assert conversation.id.startswith("conv_") and conversation.metadata == {"topic": "demo"}
    added = await here.conversations.items.create(
        conversation.id,
        items=[
            {"type": "message", "role": "assistant", "content": "hello"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "bye"}]},
        ],
    )
    assert [item.content[0].type for item in added.data] == ["output_text", "input_text"]  # type: ignore[union-attr]
    newest = await here.conversations.items.list(conversation.id, limit=2)
    assert [i.id for i in newest.data] == [added.data[1].id, added.data[0].id] and newest.has_more
    older = await here.conversations.items.list(conversation.id, after=newest.data[-1].id)
    assert [i.content[0].text for i in older.data] == ["hi"] and not older.has_more  # type: ignore[union-attr]
    assert (
        await here.conversations.items.retrieve(added.data[0].id, conversation_id=conversation.id)
    ).id == added.data[0].id
    updated = await here.conversations.update(conversation.id, metadata={"topic": "changed"})
    assert updated.metadata == {"topic": "changed"}
    assert region.snapshot()["objects"] == {"conversation": 1, "conversation.item": 3}

    await all_not_found(
        lambda: there.conversations.retrieve(conversation.id),
        lambda: there.conversations.items.list(conversation.id),
        lambda: there.conversations.items.retrieve(added.data[0].id, conversation_id=conversation.id),
        lambda: there.conversations.delete(conversation.id),
    )
    status, _, error = await get(session, f"{home}/openai/conversations/{conversation.id}?api-version={PREVIEW}")
    assert (status, error["error"]["code"]) == (404, "404")  # no classic surface: Azure's unknown-route 404

    after_delete = await here.conversations.items.delete(added.data[0].id, conversation_id=conversation.id)
    assert after_delete.id == conversation.id
    deleted = await here.conversations.delete(conversation.id)
    assert (deleted.id, deleted.deleted) == (conversation.id, True)
    assert region.snapshot()["objects"] == {}
    with pytest.raises(openai.NotFoundError):
        await here.conversations.items.list(conversation.id)
