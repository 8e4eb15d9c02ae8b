"""/status in a real headless browser (Debian's Chromium, driven by Playwright) over a real stack: the bars follow
load as it comes and goes, the page asks for nothing but /status and never puts the key in a URL or a log, a refused
key shows the 401, and whatever the report says is written as text.

`UPDATE_SCREENSHOT=1` writes the screenshot taken under load to docs/status.png (the README shows it).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

from playwright.async_api import BrowserContext, Page, Request, Route, async_playwright

from dev import load
from dev.stack import CHAT, ROOT, Stack
from tests.e2e.conftest import TIME_SCALE
from tests.e2e.test_containment import access_lines

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking switches Chromium dials out at start, which this closed network refuses.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = ROOT / "docs" / "status.png"
MAX_TOKENS = 400

# ./dev/test.sh installs it; without it these tests fail rather than pass unseen.
assert CHROMIUM.exists(), "the browser tests need Debian's chromium: apt-get install -y chromium"

T = TypeVar("T")


@contextlib.asynccontextmanager
async def browser(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            tmp_path / "chromium-profile",
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1200, "height": 800},
        )
        try:
            yield context
        finally:
            await context.close()


async def until(read: Callable[[], Awaitable[T]], check: Callable[[T], bool], within: float = 15.0) -> T:
    """Read until `check` holds, for at most `within` real seconds; the page refreshes once a second."""
    deadline = time.monotonic() + within
    while True:
        value = await read()
        if check(value):
            return value
        assert time.monotonic() < deadline, f"not reached in {within}s; last: {value!r}"
        await asyncio.sleep(0.1)


BARS = """() => Object.fromEntries([...document.querySelectorAll('[data-deployment="%s"] tr[data-host]')].map(
  (row) => [row.dataset.host, {
    state: row.querySelector('.states').textContent,
    bar: row.querySelector('.bar').getBoundingClientRect().width,
    ...Object.fromEntries([...row.querySelectorAll('.bar span')].map((part) => [part.className,
      {tokens: Number(part.dataset.tokens), width: part.getBoundingClientRect().width}])),
  }]))"""


async def hosts(page: Page, deployment: str = CHAT) -> dict[str, dict[str, Any]]:
    """Per host row as drawn: each bar segment's tokens and rendered width in pixels, and the state text."""
    found: dict[str, dict[str, Any]] = await page.evaluate(BARS % deployment)
    return found


async def client_tokens(page: Page, name: str) -> int:
    cells = await page.locator(f'tr[data-client="{name}"] td').all_inner_texts()
    return int(cells[2].replace(",", ""))


async def test_under_load_the_bars_move_and_the_page_asks_for_nothing_but_status(stack: Stack, tmp_path: Path) -> None:
    async with browser(tmp_path) as context:
        page = await context.new_page()
        requests: list[Request] = []
        page.on("request", lambda request: requests.append(request))
        await page.goto(f"{stack.url}/status#key={quote(stack.client_key, safe='')}")
        idle = await until(lambda: hosts(page), lambda rows: len(rows) == 3)
        assert urlsplit(page.url).fragment == ""  # the key left the address bar and the history
        assert all(row["used"]["width"] == 0 and row["reserved"]["tokens"] == 0 for row in idle.values()), idle
        before = await client_tokens(page, "local-dev")

        stack.set_faults("eastus", error_500=True)  # its answers fail: the gateway ejects it, the others serve
        client = load.gateway_client(stack.url, stack.client_key)
        rate = 0.5 * sum(r.tpm for r in stack.regions) / 60.0 / load.request_cost(MAX_TOKENS)
        targets = [load.Target(client, CHAT, "gateway")]
        # Half the regions' quota for two simulated minutes: four real seconds, a few refreshes of the page.
        loading = asyncio.create_task(
            load.run_load(targets, rate=rate, duration=120.0, time_scale=TIME_SCALE, max_tokens=MAX_TOKENS)
        )
        try:
            busy = await until(
                lambda: hosts(page),
                lambda rows: (
                    # a quarter of their quota in use: they serve about 60% of theirs once the window is full
                    rows["westus"]["used"]["tokens"] >= 5_000
                    and rows["uksouth"]["used"]["tokens"] >= 7_500
                    # ejected by live traffic, or excluded by a probe that came first
                    and ("ejected" in rows["eastus"]["state"] or "probe failing" in rows["eastus"]["state"])
                ),
            )
            await page.screenshot(
                path=SCREENSHOT if os.environ.get("UPDATE_SCREENSHOT") == "1" else tmp_path / "status.png",
                full_page=True,
            )
            assert await client_tokens(page, "local-dev") > before
            await loading
        finally:
            loading.cancel()  # a no-op once it is done
            stack.set_faults("eastus", error_500=False)
        for name, region in (("westus", 20_000), ("uksouth", 30_000)):
            row = busy[name]
            # Each segment is drawn to scale against the host's quota.
            for part in ("used", "reserved", "free"):
                assert abs(row[part]["width"] - row["bar"] * row[part]["tokens"] / region) <= 1.0, (name, row)
        # The window empties a simulated minute after the load: the page follows without a reload.
        await until(lambda: hosts(page), lambda rows: all(row["used"]["width"] == 0 for row in rows.values()))

        fetches = [r for r in requests if r.resource_type == "fetch"]
        assert {urlsplit(r.url).path for r in requests} == {"/status"}
        assert len(fetches) >= 4
        for request in fetches:
            headers = await request.all_headers()
            assert headers["accept"] == "application/json" and headers["api-key"] == stack.client_key
        times = [r.timing["startTime"] for r in fetches]
        assert min(later - earlier for earlier, later in itertools.pairwise(times)) >= 950  # ms
    # The server saw nothing else either (no favicon), and the key reached no log.
    assert {line["path"] for line in access_lines(stack) if not line["path"].startswith("/openai/")} <= {"/status"}
    assert stack.client_key not in (stack.workdir / "host-0.log").read_text(errors="replace")


async def test_a_refused_key_shows_the_401_and_the_form_takes_a_good_one(stack: Stack, tmp_path: Path) -> None:
    wrong = "gw-not-the-key-0123456789"
    async with browser(tmp_path) as context:
        page = await context.new_page()
        keys: list[str | None] = []
        page.on("request", lambda request: keys.append(request.headers.get("api-key")))
        await page.goto(f"{stack.url}/status#key={wrong}")
        error = page.locator("#error")
        await error.wait_for(state="visible")
        assert await error.inner_text() == "401: Access denied due to invalid gateway key."
        assert await page.locator("tr[data-host]").count() == 0
        await page.fill("#key", stack.client_key)
        await page.click("#login button[type=submit]")
        await until(lambda: hosts(page), lambda rows: len(rows) == 3)
        assert not await error.is_visible() and not await page.locator("#login").is_visible()

        async def good() -> int:
            return keys.count(stack.client_key)

        await until(good, lambda count: count >= 2)
        assert keys.count(wrong) == 1  # refused once, then it stopped asking with that key


REPORT: dict[str, Any] = {
    "instance": "local-0",
    "time_scale": 30.0,
    "in_flight": 2,
    "ledger": {"kind": "table", "writes": 3, "reads": 9},
    "panic": {CHAT: 12.5},
    "deployments": {
        CHAT: [
            {
                "name": "eastus",
                "tpm": 10_000,
                "window_tokens": 9_000,
                "reserved_tokens": 1_000,
                "cooldown_seconds": 4.2,
                "cooldown_reason": "429 request limit",
                "token_blocks": [{"min_cost": 5_000, "seconds": 3}],
                "probe": {"healthy": False, "reason": "HTTP 500"},
                "available": False,
            },
            {
                "name": "westus",
                "tpm": 20_000,
                "window_tokens": 25_000,  # over quota (another consumer of the deployment): drawn full, no free
                "reserved_tokens": 0,
                "ejected_seconds": 30,
                "ejection_reason": "502 from upstream",
            },
            {"name": '<img src=x onerror="window.injected = 1">'},  # a name and nothing else
        ]
    },
    "clients": {"<b>bold</b>": {"tokens_today": 5}, "app": {"priority": "low", "limits": {"tpm": 1000}}},
    "a_field_added_later": {"nested": [1, 2]},
}


async def test_cooldowns_ejections_panic_and_hostile_names_are_drawn_as_text(stack: Stack, tmp_path: Path) -> None:
    async def crafted(route: Route) -> None:
        if route.request.resource_type == "fetch":
            await route.fulfill(json=REPORT)
        else:
            await route.continue_()  # the page itself comes from the real gateway

    async with browser(tmp_path) as context:
        page = await context.new_page()
        await page.route("**/status", crafted)
        await page.goto(f"{stack.url}/status#key={quote(stack.client_key, safe='')}")
        rows = await until(lambda: hosts(page), lambda found: len(found) == 3)
        east, west, hostile = rows["eastus"], rows["westus"], rows['<img src=x onerror="window.injected = 1">']
        assert [east[p]["tokens"] for p in ("used", "reserved", "free")] == [8_000, 1_000, 1_000]
        assert abs(east["used"]["width"] - 0.8 * east["bar"]) <= 1.0
        for badge in ("cooling down 4.2 s: 429 request limit", "requests of 5,000+ tokens wait 3.0 s", "probe failing"):
            assert badge in east["state"]
        assert abs(west["used"]["width"] - west["bar"]) <= 1.0 and west["free"]["tokens"] == 0
        assert "ejected 30.0 s: 502 from upstream" in west["state"]
        assert [hostile[p]["tokens"] for p in ("used", "reserved", "free")] == [0, 0, 0]
        assert await page.locator(f'[data-deployment="{CHAT}"] .panic').inner_text() == (
            "Panic mode for 12.5 s: probes fail on hosts with most of the quota, routing to them anyway."
        )
        assert "seconds are simulated (30x time)" in await page.inner_text("#meta")
        assert await page.locator('tr[data-client="<b>bold</b>"] td').first.inner_text() == "<b>bold</b>"
        assert await page.locator("#report img, #report b").count() == 0
        assert await page.evaluate("window.injected") is None
