"""Discovery: an unrecorded id is looked for in every resource at once, bounded per id and per client; 404 only
when every resource said it has none."""

from __future__ import annotations

import pytest

from shared import routes
from shared.auth import Caller
from shared.clock import ManualClock
from shared.cluster import Host
from shared.config import Client
from shared.discovery import Discovery
from shared.errors import GatewayError
from shared.inbound import Inbound
from shared.outgoing import Outgoing
from shared.record import RequestRecord

EAST = Host("eastus", "https://east.example", "d", tpm=1000, rpm=6)
WEST = Host("westus", "https://west.example", "d", tpm=1000, rpm=6)
CLIENT = Client("app-a")


def caller(owner: str = "app-a") -> Caller:
    return Caller("app-a", "entra", owner, CLIENT)


def request() -> Inbound:
    route = routes.match("GET", "/openai/files/file-abc")
    return Inbound(route, [("api-version", "2024-10-21")], {}, b"", None, None, 0, 0, False, False)


class Regions:
    """Each region's answer to a lookup: a status, or None for no answer at all."""

    def __init__(self, **answers: int | None) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def __call__(self, host: Host, inbound: Inbound, record: RequestRecord) -> tuple[Outgoing | None, str]:
        self.asked.append(host.name)
        status = self.answers[host.name]
        return (None, "refused") if status is None else (Outgoing(status, {}), "")


def discovery(regions: Regions, clock: ManualClock, per_minute: int = 60) -> Discovery:
    return Discovery(
        lambda: (EAST, WEST), regions, clock, per_minute=per_minute, negative_seconds=30.0, retry_after=5.0
    )


async def find(found: Discovery, who: Caller | None = None) -> Host | None:
    return await found.find("file", "file-abc", request(), who or caller(), RequestRecord("GET", "/"))


async def test_the_resource_that_has_it_is_found() -> None:
    regions = Regions(eastus=404, westus=200)
    assert await find(discovery(regions, ManualClock())) == WEST
    assert sorted(regions.asked) == ["eastus", "westus"]  # everyone at once


async def test_absent_everywhere_is_remembered_for_a_while() -> None:
    regions, clock = Regions(eastus=404, westus=404), ManualClock()
    found = discovery(regions, clock)
    assert await find(found) is None
    assert await find(found) is None and len(regions.asked) == 2  # the negative cache: nobody asked again
    clock.advance(31)
    assert await find(found) is None and len(regions.asked) == 4


@pytest.mark.parametrize("silence", [None, 500, 429])
async def test_a_region_that_could_not_answer_is_a_503_naming_it_never_a_cached_404(silence: int | None) -> None:
    regions, clock = Regions(eastus=404, westus=silence), ManualClock()
    found = discovery(regions, clock)
    with pytest.raises(GatewayError) as caught:
        await find(found)
    assert (caught.value.status, caught.value.code) == (503, "RegionUnavailable")
    assert "westus" in caught.value.message and caught.value.retry_after == 5.0
    regions.answers["westus"] = 200
    assert await find(found) == WEST  # not remembered as absent


async def test_the_lookup_budget_is_the_clients_whatever_application_asks() -> None:
    """Entra applications acting as the default client own their objects apart, but share its lookup budget."""
    regions, clock = Regions(eastus=404, westus=404), ManualClock()
    found = discovery(regions, clock, per_minute=2)
    for number, app in enumerate(("entra:app-1", "entra:app-2")):
        await found.find("file", f"file-{number}", request(), caller(app), RequestRecord("GET", "/"))
    with pytest.raises(GatewayError) as caught:
        await found.find("file", "file-9", request(), caller("entra:app-3"), RequestRecord("GET", "/"))
    assert (caught.value.status, caught.value.code) == (429, "client_rate_limit_exceeded")
