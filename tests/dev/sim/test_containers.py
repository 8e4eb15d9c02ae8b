"""Containers and their files, on the v1 surface only: uploaded or copied from a file of the same region."""

from __future__ import annotations

import aiohttp
import pytest

from tests.dev.sim.conftest import PREVIEW, Clients, Launch, all_not_found, get


@pytest.mark.asyncio
async def test_container_files_are_uploaded_or_copied_and_downloaded(
    launch: Launch, sdk: Clients, session: aiohttp.ClientSession
) -> None:
    region, home = await launch()
    _, elsewhere = await launch(name="westus")
    here, there = sdk.v1(home), sdk.v1(elsewhere)
    source = await here.files.create(file=("data.csv", b"a,b\n1,2\n"), purpose="assistants")
    container = await here.containers.create(name="sandbox", file_ids=[source.id])
    assert container.id.startswith("cntr_") and container.status == "running"
    uploaded = await here.containers.files.create(container.id, file=("script.py", b"print(1)\n"))
    copied = await here.containers.files.create(container.id, file_id=source.id)
    assert uploaded.id.startswith("cfile_") and (uploaded.path, uploaded.bytes) == ("/mnt/data/script.py", 9)
    assert (copied.path, copied.container_id) == ("/mnt/data/data.csv", container.id)
    listed = await here.containers.files.list(container.id)
    assert [f.id for f in listed.data][:2] == [copied.id, uploaded.id] and len(listed.data) == 3
    content = await here.containers.files.content.retrieve(uploaded.id, container_id=container.id)
    assert content.read() == b"print(1)\n"
    assert (await here.containers.files.retrieve(copied.id, container_id=container.id)).bytes == source.bytes
    assert [c.id for c in (await here.containers.list()).data] == [container.id]

    await all_not_found(
        lambda: there.containers.retrieve(container.id),
        lambda: there.containers.files.create(container.id, file_id=source.id),
        lambda: there.containers.files.content.retrieve(uploaded.id, container_id=container.id),
        lambda: there.containers.create(name="copy", file_ids=[source.id]),  # the file is not there
    )
    assert (await get(session, f"{home}/openai/containers/{container.id}?api-version={PREVIEW}"))[0] == 404

    await here.containers.files.delete(uploaded.id, container_id=container.id)
    assert region.snapshot()["objects"]["container.file"] == 2
    await here.containers.delete(container.id)
    assert region.snapshot()["objects"] == {"file": 1}
    assert region.snapshot()["created"] == {"file": 1, "container": 1, "container.file": 3}
