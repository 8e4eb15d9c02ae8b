"""Vector stores, their files and file batches, and search, on both surfaces; files must be the region's own."""

from __future__ import annotations

import openai
import pytest

from tests.dev.sim.conftest import Clients, Launch, all_not_found


@pytest.mark.asyncio
async def test_a_vector_store_indexes_the_regions_files_and_searches_them(launch: Launch, sdk: Clients) -> None:
    region, home = await launch()
    _, elsewhere = await launch(name="westus")
    here, v1, there = sdk.azure(home), sdk.v1(home), sdk.azure(elsewhere)
    notes = await here.files.create(file=("notes.txt", b"the quarterly report is late"), purpose="assistants")
    recipe = await here.files.create(file=("recipe.txt", b"bake the bread"), purpose="assistants")
    store = await here.vector_stores.create(name="docs", file_ids=[notes.id])
    assert store.id.startswith("vs_") and (store.file_counts.completed, store.usage_bytes) == (1, notes.bytes)

    results = await v1.vector_stores.search(store.id, query="quarterly report")
    assert [(r.file_id, r.filename, r.score) for r in results.data] == [(notes.id, "notes.txt", 1.0)]
    assert results.data[0].content[0].text == "the quarterly report is late"
    batch = await here.vector_stores.file_batches.create(store.id, file_ids=[recipe.id])
    assert batch.id.startswith("vsfb_") and batch.status == "completed" and batch.file_counts.total == 1
    assert (await v1.vector_stores.file_batches.retrieve(batch.id, vector_store_id=store.id)).id == batch.id
    in_batch = await here.vector_stores.file_batches.list_files(batch.id, vector_store_id=store.id)
    assert [f.id for f in in_batch.data] == [recipe.id]
    assert (await here.vector_stores.file_batches.cancel(batch.id, vector_store_id=store.id)).status == "completed"
    searched = await here.vector_stores.search(store.id, query=["bread", "missing"])
    assert [(r.file_id, r.score) for r in searched.data] == [(recipe.id, 0.5)]

    listed = await here.vector_stores.files.list(store.id)
    assert [f.id for f in listed.data] == [recipe.id, notes.id]
    content = await v1.vector_stores.files.content(recipe.id, vector_store_id=store.id)
    assert [part.text for part in content.data] == ["bake the bread"]
    renamed = await v1.vector_stores.update(store.id, name="renamed")
    assert (renamed.name, renamed.file_counts.total) == ("renamed", 2)
    assert (await here.vector_stores.files.delete(notes.id, vector_store_id=store.id)).deleted
    assert (await here.vector_stores.retrieve(store.id)).file_counts.total == 1
    assert region.snapshot()["objects"]["vector_store.file"] == 1

    await all_not_found(
        lambda: there.vector_stores.retrieve(store.id),
        lambda: there.vector_stores.search(store.id, query="bread"),
        lambda: there.vector_stores.files.create(store.id, file_id=recipe.id),
        lambda: there.vector_stores.create(name="copy", file_ids=[recipe.id]),  # the file is not there
    )
    with pytest.raises(openai.NotFoundError):
        await here.vector_stores.files.create(store.id, file_id="file-unknown")
    assert (await here.vector_stores.delete(store.id)).deleted
    assert region.snapshot()["objects"] == {"file": 2}
