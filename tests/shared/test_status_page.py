"""/status for browsers: which Accept gets the page, what the page's answer carries, and that the JSON stays
authenticated as before. The page in a real browser: tests/e2e/test_status_page.py."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from typing import Any

import pytest
from starlette.requests import Request

from shared import status_page
from shared.config import load_settings
from shared.errors import GatewayError
from shared.gateway import Gateway

KEY = "gw-status-page-key-0123456789"
CHROMIUM = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8"
FIREFOX = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.mark.parametrize(
    ("accept", "page"),
    [
        (CHROMIUM, True),
        (FIREFOX, True),
        ("text/html", True),
        ("TEXT/HTML ; charset=utf-8", True),
        ("text/html, application/json;q=0", True),  # JSON refused outright
        ("", False),  # no Accept: what the SDKs and scripts send
        ("*/*", False),  # curl
        ("application/json", False),
        ("application/json, text/html", False),
        ("text/html, application/json;q=0.1", False),  # any acceptable JSON keeps the JSON
        ("text/html;q=0", False),
        ("text/html;q=nan", False),
        ("text/html;q=high", False),
        ("text/plain", False),
    ],
)
def test_only_a_browser_navigation_gets_the_page(accept: str, page: bool) -> None:
    assert status_page.wants_page(accept) is page


class _Elements(HTMLParser):
    """Every start tag with its attributes, and the text inside each <script> and <style>."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline: dict[str, list[str]] = {"script": [], "style": []}
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag in self.inline:
            self._open = tag
            self.inline[tag].append("")

    def handle_endtag(self, tag: str) -> None:
        self._open = None

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self.inline[self._open][-1] += data


def _parsed() -> _Elements:
    parser = _Elements()
    parser.feed(status_page.PAGE.decode())
    return parser


def _directives() -> dict[str, list[str]]:
    policy = status_page.PAGE_HEADERS["content-security-policy"]
    return {name: values for name, *values in (part.split() for part in policy.split(";"))}


def _hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


def test_the_policy_admits_exactly_the_pages_own_inline_script_and_style() -> None:
    parsed, csp = _parsed(), _directives()
    [script], [style] = parsed.inline["script"], parsed.inline["style"]
    assert csp["default-src"] == ["'none'"]
    assert csp["script-src"] == [_hash(script)]
    assert csp["style-src"] == [_hash(style)]
    assert csp["connect-src"] == ["'self'"]
    assert csp["img-src"] == ["data:"]
    assert csp["form-action"] == ["'none'"] and csp["frame-ancestors"] == ["'none'"] and csp["base-uri"] == ["'none'"]
    assert "'unsafe-inline'" not in status_page.PAGE_HEADERS["content-security-policy"]


def test_the_page_is_self_contained_and_writes_data_as_text_only() -> None:
    parsed = _parsed()
    for tag, attrs in parsed.tags:
        assert "src" not in attrs, tag  # no external script, image or frame
        assert not any(name.startswith("on") for name in attrs), tag  # no inline handlers the policy would block
        assert "style" not in attrs, tag
        if tag == "link":
            assert attrs["href"] == "data:,"  # the empty favicon only: no stylesheet, no font
    text = status_page.PAGE.decode()
    assert not re.search(r"https?://|@import|url\(", text)
    [script] = parsed.inline["script"]
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
        assert sink not in script


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    doc = {
        "deployments": {
            "gpt-4o": [{"name": "eastus", "endpoint": "https://e.example", "deployment": "d", "tpm": 1000}]
        },
        "clients": [{"name": "app-a", "key_setting": "GATEWAY_KEY_APP_A"}],
    }
    env = {
        "GATEWAY_CONFIG": json.dumps(doc),
        "GATEWAY_KEY_APP_A": KEY,
        "GATEWAY_CREDENTIAL": "static",
        "GATEWAY_STATIC_TOKEN": "t",
        "GATEWAY_INSTANCE_ID": "instance-7",
    }
    gateway = Gateway(load_settings(env))
    yield gateway
    await gateway.close()


def get_status(headers: dict[str, str]) -> Request:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    raw = [(name.encode(), value.encode()) for name, value in headers.items()]
    scope = {"type": "http", "method": "GET", "path": "/status", "raw_path": b"/status", "query_string": b""}
    return Request({**scope, "headers": raw}, receive)


async def test_a_browser_gets_the_page_without_a_key_and_without_any_data(gateway: Gateway) -> None:
    response = await gateway.status(get_status({"accept": CHROMIUM}))
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["vary"] == "accept"
    assert response.headers["content-security-policy"] == status_page.CONTENT_SECURITY_POLICY
    body = bytes(response.body).decode()
    assert body == status_page.PAGE.decode()
    for data in ("eastus", "app-a", "instance-7", "gpt-4o", KEY):
        assert data not in body


async def test_the_page_is_served_even_while_the_gateway_cannot_start(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def failing_start() -> None:
        raise GatewayError(503, "UpstreamCredentialUnavailable", "The gateway cannot sign in to Azure OpenAI.")

    monkeypatch.setattr(gateway, "_start", failing_start)
    assert (await gateway.status(get_status({"accept": CHROMIUM}))).status_code == 200
    answer = await gateway.status(get_status({"accept": "application/json", "api-key": KEY}))
    assert answer.status_code == 503  # what the page's script then shows


@pytest.mark.parametrize("accept", [None, "application/json", "text/html, application/json", "*/*"])
@pytest.mark.parametrize("key", [None, "gw-a-wrong-key-0123456789"])
async def test_the_json_needs_a_key_as_before(gateway: Gateway, accept: str | None, key: str | None) -> None:
    headers = {name: value for name, value in (("accept", accept), ("api-key", key)) if value is not None}
    response = await gateway.status(get_status(headers))
    assert response.status_code == 401
    assert json.loads(bytes(response.body))["error"]["code"] == "401"


async def test_a_key_changes_nothing_for_the_page(gateway: Gateway) -> None:
    response = await gateway.status(get_status({"accept": CHROMIUM, "api-key": KEY}))
    assert response.status_code == 200 and bytes(response.body) == status_page.PAGE


async def test_the_json_with_a_key_is_the_report_and_is_never_cached(gateway: Gateway) -> None:
    for accept in ("application/json", "*/*", ""):
        response = await gateway.status(get_status({"accept": accept, "api-key": KEY}))
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.headers["vary"] == "accept" and response.headers["cache-control"] == "no-store"
        report = json.loads(bytes(response.body))
        assert report["instance"] == "instance-7" and report["time_scale"] == 1.0
        assert [host["name"] for host in report["deployments"]["gpt-4o"]] == ["eastus"]
        assert set(report["clients"]) == {"app-a"}
