"""Files (and the batches made from them) live in one region: through the gateway they always go home.

The simulated regions keep files per region, as Azure does, so reading one from another region is a 404.
Clients are the official AzureOpenAI SDK, as an application would use it.
"""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from openai import AzureOpenAI

from dev.stack import CHAT, RegionSpec, Stack
from tests.e2e.conftest import TIME_SCALE
from tests.e2e.test_affinity import fill, free_fractions

REGIONS = (RegionSpec("eastus", 60_000), RegionSpec("westus", 90_000), RegionSpec("uksouth", 120_000))
API_VERSION = "2024-10-21"
JSONL = b'{"custom_id": "1", "method": "POST", "url": "/chat/completions", "body": {"model": "gpt-4o"}}\n'


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("files"), REGIONS, TIME_SCALE, simulator_args=("--per-token", "0")) as s:
        yield s


def gateway(stack: Stack) -> AzureOpenAI:
    return AzureOpenAI(azure_endpoint=stack.url, api_key=stack.client_key, api_version=API_VERSION, max_retries=0)


def direct(stack: Stack, region: str) -> AzureOpenAI:
    return AzureOpenAI(azure_endpoint=stack.region_urls[region], api_key="any", api_version=API_VERSION, max_retries=0)


def upload(client: AzureOpenAI, content: bytes = JSONL) -> tuple[str, str]:
    """The new file's id and the region that holds it."""
    raw = client.files.with_raw_response.create(file=("data.jsonl", content), purpose="batch")
    return raw.parse().id, raw.headers["x-gateway-backend"]


def test_a_file_is_read_from_the_region_that_holds_it(stack: Stack) -> None:
    client = gateway(stack)
    file_id, home = upload(client, b'{"n": 1}\n')
    others = [r.name for r in REGIONS if r.name != home]
    with pytest.raises(openai.NotFoundError):  # without affinity: any other region has never heard of it
        direct(stack, others[0]).files.retrieve(file_id)
    for _ in range(4):
        raw = client.files.with_raw_response.retrieve(file_id)
        assert raw.headers["x-gateway-backend"] == home and raw.headers["x-ms-region"] == home
        assert raw.parse().filename == "data.jsonl"
    content = client.files.with_raw_response.content(file_id)
    assert content.headers["x-gateway-backend"] == home and content.content == b'{"n": 1}\n'
    deleted = client.files.with_raw_response.delete(file_id)
    assert deleted.headers["x-gateway-backend"] == home and deleted.parse().deleted
    with pytest.raises(openai.NotFoundError):  # home's own 404: it no longer exists
        client.files.retrieve(file_id)


def test_a_batch_goes_to_its_files_region_even_when_that_is_the_most_loaded(stack: Stack) -> None:
    client = gateway(stack)
    file_id, home = upload(client)
    others = [r.name for r in REGIONS if r.name != home]
    with pytest.raises(openai.NotFoundError):  # without affinity: another region cannot read the input file
        direct(stack, others[0]).batches.create(
            input_file_id=file_id, endpoint="/chat/completions", completion_window="24h"
        )
    make_most_loaded(stack, client, home)
    batches = []
    for _ in range(3):
        raw = client.batches.with_raw_response.create(
            input_file_id=file_id, endpoint="/chat/completions", completion_window="24h"
        )
        assert raw.headers["x-gateway-backend"] == home and raw.headers["x-ms-region"] == home
        batches.append(raw.parse())
    assert {b.input_file_id for b in batches} == {file_id} and {b.status for b in batches} == {"validating"}
    fetched = client.batches.with_raw_response.retrieve(batches[0].id)
    assert fetched.headers["x-gateway-backend"] == home and fetched.parse().id == batches[0].id
    cancelled = client.batches.with_raw_response.cancel(batches[1].id)
    assert cancelled.headers["x-gateway-backend"] == home and cancelled.parse().status == "cancelling"
    with pytest.raises(openai.NotFoundError) as caught:
        client.batches.retrieve("batch_unknown")
    assert caught.value.body["message"] == "No batch found with id 'batch_unknown'."  # type: ignore[index]


def make_most_loaded(stack: Stack, client: AzureOpenAI, region: str) -> None:
    """Spend most of a region's window behind the gateway's back, then let the gateway learn it from an answer."""
    fill(stack, region, leave=next(r.tpm for r in REGIONS if r.name == region) // 10)
    for _ in range(30):
        raw = client.chat.completions.with_raw_response.create(
            model=CHAT, messages=[{"role": "user", "content": "x"}], max_tokens=1
        )
        if raw.headers["x-gateway-backend"] == region:
            break
    fractions = free_fractions(stack)
    assert min(fractions, key=fractions.__getitem__) == region, fractions


def test_an_unknown_file_is_404_in_openai_shape(stack: Stack) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        gateway(stack).files.retrieve("file-unknown")
    assert caught.value.body == {  # type: ignore[comparison-overlap]
        "code": "not_found",
        "message": "No file found with id 'file-unknown'.",
        "type": "invalid_request_error",
    }


def test_when_the_files_region_is_down_the_answer_is_503_naming_it(stack: Stack) -> None:
    client = gateway(stack)
    file_id, home = upload(client)
    stack.set_faults(home, down=True)
    try:
        for call in (lambda: client.files.retrieve(file_id), lambda: client.files.content(file_id)):
            with pytest.raises(openai.APIStatusError) as caught:
                call()
            assert caught.value.status_code == 503
            assert int(caught.value.response.headers["retry-after"]) >= 1
            assert caught.value.body["code"] == "RegionUnavailable"  # type: ignore[index]
            assert f"file '{file_id}' lives in region {home}" in caught.value.body["message"]  # type: ignore[index]
    finally:
        stack.set_faults(home, down=False)


def test_a_list_shows_the_callers_files_of_every_region_newest_first_and_pages(stack: Stack) -> None:
    placed = {
        r.name: direct(stack, r.name).files.create(file=("r.jsonl", b"{}\n"), purpose="batch").id for r in REGIONS
    }
    client = gateway(stack)
    mine = {upload(client)[0] for _ in range(5)}
    raw = client.files.with_raw_response.list()
    assert raw.headers["x-gateway-backend"] == ",".join(r.name for r in REGIONS)
    listed = raw.parse()
    ids = [f.id for f in listed.data]
    assert mine <= set(ids) and not listed.has_more
    assert not set(placed.values()) & set(ids)  # made behind the gateway's back: nobody's, shown to admins only
    created = [f.created_at for f in listed.data]
    assert created == sorted(created, reverse=True)
    # The SDK's auto-pagination sends `after=<last id>`: every page follows on, nothing twice, nothing lost.
    paged = [f.id for f in client.files.list(limit=2)]
    assert paged == ids
    with pytest.raises(openai.NotFoundError):  # uploaded behind the gateway's back: not this client's to use
        client.batches.create(input_file_id=placed["westus"], endpoint="/chat/completions", completion_window="24h")
    batch = client.batches.create(
        input_file_id=upload(client)[0], endpoint="/chat/completions", completion_window="24h"
    )
    assert batch.id in {b.id for b in client.batches.list(limit=100).data}


def test_a_list_fails_whole_when_a_region_fails_naming_it(stack: Stack) -> None:
    stack.set_faults("westus", error_500=True)
    try:
        with pytest.raises(openai.APIStatusError) as caught:
            gateway(stack).files.list()
    finally:
        stack.set_faults("westus", error_500=False)
    assert caught.value.status_code == 503 and caught.value.body["code"] == "RegionUnavailable"  # type: ignore[index]
    assert "westus" in caught.value.body["message"] and "eastus" not in caught.value.body["message"]  # type: ignore[index]
