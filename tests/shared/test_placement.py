"""Placement.record: what an answer tells of is recorded with the right owner."""

from __future__ import annotations

from typing import Any

from shared import routes
from shared.affinity import Home, MemoryAffinityStore
from shared.clock import ManualClock
from shared.cluster import Cluster, Host
from shared.health import HealthBoard
from shared.placement import Placement, Plan

EAST = Host("eastus", "https://east.example", "d", tpm=1000, rpm=6)


def placement() -> tuple[Placement, MemoryAffinityStore]:
    clock = ManualClock()
    store = MemoryAffinityStore(clock)
    return Placement(Cluster({"gpt-4o": (EAST,)}), store, HealthBoard(clock), 5.0), store


async def served(where: Placement, method: str, path: str, named: tuple[Any, ...], payload: Any) -> None:
    plan = Plan((EAST,), owner="ops", named=named)  # the caller is an admin, reaching app-a's object
    await where.record(plan, routes.match(method, path), EAST, payload)


async def test_an_admin_running_a_clients_thread_leaves_the_thread_the_clients() -> None:
    where, store = placement()
    thread = Home(EAST.key, "app-a")
    store.put("thread:thread_abc", thread, 3600)
    run = {"object": "thread.run", "id": "run_1", "thread_id": "thread_abc"}
    await served(where, "POST", "/openai/threads/thread_abc/runs", (("thread", "thread_abc", thread),), run)
    assert await store.get("thread:thread_abc") == thread


async def test_a_finished_batchs_files_are_its_owners_whoever_reads_it_first() -> None:
    where, store = placement()
    batch = Home(EAST.key, "app-a")
    answer = {"object": "batch", "id": "batch_1", "output_file_id": "file-out", "error_file_id": "file-err"}
    await served(where, "GET", "/openai/batches/batch_1", (("batch", "batch_1", batch),), answer)
    assert await store.get("file:file-out") == Home(EAST.key, "app-a")
    assert await store.get("file:file-err") == Home(EAST.key, "app-a")


async def test_what_a_request_creates_is_its_callers() -> None:
    where, store = placement()
    await where.record(
        Plan((EAST,), owner="app-b"), routes.match("POST", "/openai/files"), EAST, {"object": "file", "id": "file-new"}
    )
    assert await store.get("file:file-new") == Home(EAST.key, "app-b")
