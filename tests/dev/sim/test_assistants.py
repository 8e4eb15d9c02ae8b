"""Assistants, threads, messages, runs and steps on the classic surface, through the SDK.

A run of an assistant with a function tool stops at requires_action; submitting the tool output completes it.
Both stream as Assistants SSE events, ending `event: done` / `data: [DONE]`.
"""

from __future__ import annotations

import aiohttp
import openai
import pytest

from dev.sim.inference import text
from tests.dev.sim.conftest import AUTH, PREVIEW, Clients, Launch, all_not_found

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK marks the Assistants API deprecated

LOOKUP = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}


@pytest.mark.asyncio
async def test_a_streamed_run_asks_for_a_tool_and_completes_with_its_output(launch: Launch, sdk: Clients) -> None:
    region, url = await launch()
    client = sdk.azure(url)
    report = await client.files.create(file=("report.txt", b"numbers"), purpose="assistants")
    assistant = await client.beta.assistants.create(model="gpt-4o", name="helper", tools=[LOOKUP])  # type: ignore[list-item]
    thread = await client.beta.threads.create(
        messages=[{"role": "user", "content": "look it up", "attachments": [{"file_id": report.id}]}]
    )
    stream = await client.beta.threads.runs.create(thread.id, assistant_id=assistant.id, stream=True)
    events = [event async for event in stream]
    assert [e.event for e in events] == [
        "thread.run.created",
        "thread.run.queued",
        "thread.run.in_progress",
        "thread.run.step.created",
        "thread.run.step.in_progress",
        "thread.run.requires_action",
    ]
    run = events[-1].data
    assert run.status == "requires_action" and run.required_action is not None  # type: ignore[union-attr]
    [call] = run.required_action.submit_tool_outputs.tool_calls  # type: ignore[union-attr]
    assert (call.type, call.function.name) == ("function", "lookup")

    with pytest.raises(openai.BadRequestError):  # the call's id is the one to answer
        await client.beta.threads.runs.submit_tool_outputs(
            run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": "call_other", "output": "42"}]
        )
    finished = await client.beta.threads.runs.submit_tool_outputs(
        run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": call.id, "output": "42"}], stream=True
    )
    rest = [event async for event in finished]
    kinds = [e.event for e in rest]
    assert kinds[:3] == ["thread.run.step.completed", "thread.run.queued", "thread.run.in_progress"]
    assert kinds[-4:] == [
        "thread.message.delta",
        "thread.message.completed",
        "thread.run.step.completed",
        "thread.run.completed",
    ]
    deltas = "".join(e.data.delta.content[0].text.value for e in rest if e.event == "thread.message.delta")  # type: ignore[union-attr]
    assert deltas == text(16)  # 16 words when no max_completion_tokens, like a generation

    messages = await client.beta.threads.messages.list(thread.id)
    assert [(m.role, m.run_id) for m in messages.data] == [("assistant", run.id), ("user", None)]
    assert messages.data[0].content[0].text.value == deltas  # type: ignore[union-attr]
    steps = await client.beta.threads.runs.steps.list(run.id, thread_id=thread.id)
    assert [s.type for s in steps.data] == ["message_creation", "tool_calls"]
    tool_step = await client.beta.threads.runs.steps.retrieve(steps.data[1].id, thread_id=thread.id, run_id=run.id)
    assert tool_step.step_details.tool_calls[0].function.output == "42"  # type: ignore[union-attr]
    completed = await client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)
    assert completed.status == "completed" and completed.usage is not None
    with pytest.raises(openai.BadRequestError):
        await client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    assert region.snapshot()["deployments"]["gpt-4o"]["admitted_tokens"] == 0  # runs cost no tokens
    assert region.snapshot()["objects"]["thread.run.step"] == 2


@pytest.mark.asyncio
async def test_runs_without_tools_complete_and_every_reference_must_be_local(
    launch: Launch, sdk: Clients, session: aiohttp.ClientSession
) -> None:
    _, home = await launch()
    _, elsewhere = await launch(name="westus")
    here, there = sdk.azure(home), sdk.azure(elsewhere)
    assistant = await here.beta.assistants.create(model="gpt-4o", instructions="be brief")
    run = await here.beta.threads.create_and_run(
        assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": "hi"}]}
    )
    assert (run.status, run.instructions) == ("completed", "be brief")
    listed = await here.beta.threads.runs.list(run.thread_id)
    assert [r.id for r in listed.data] == [run.id]
    tagged = await here.beta.threads.runs.update(run.id, thread_id=run.thread_id, metadata={"k": "v"})
    assert tagged.metadata == {"k": "v"}
    assert [a.id for a in (await here.beta.assistants.list()).data] == [assistant.id]
    assert (await here.beta.assistants.update(assistant.id, name="renamed")).name == "renamed"
    queued = await here.beta.threads.runs.create(run.thread_id, assistant_id=assistant.id)
    assert queued.status == "completed"

    thread = await there.beta.threads.create()
    local_file = await here.files.create(file=("f.txt", b"x"), purpose="assistants")
    await all_not_found(
        lambda: there.beta.assistants.retrieve(assistant.id),
        lambda: there.beta.threads.retrieve(run.thread_id),
        lambda: there.beta.threads.runs.create(thread.id, assistant_id=assistant.id),
        lambda: there.beta.threads.messages.create(
            thread.id, role="user", content="x", attachments=[{"file_id": local_file.id}]
        ),
        lambda: there.beta.assistants.create(
            model="gpt-4o", tool_resources={"code_interpreter": {"file_ids": [local_file.id]}}
        ),
        lambda: there.beta.threads.update(thread.id, tool_resources={"file_search": {"vector_store_ids": ["vs_x"]}}),
        lambda: here.beta.threads.create_and_run(
            assistant_id=assistant.id, tool_resources={"file_search": {"vector_store_ids": ["vs_elsewhere"]}}
        ),
    )
    async with session.post(f"{home}/openai/v1/assistants", json={"model": "gpt-4o"}, headers=AUTH) as resp:
        assert resp.status == 404  # the Assistants API is on Azure's dated api-versions only
    async with session.get(f"{home}/openai/threads/{run.thread_id}?api-version={PREVIEW}", headers=AUTH) as resp:
        assert resp.status == 200
    assert (await here.beta.threads.delete(run.thread_id)).deleted
    with pytest.raises(openai.NotFoundError):
        await here.beta.threads.runs.retrieve(run.id, thread_id=run.thread_id)
