"""web: what the gateway reads from Starlette's request, as Starlette itself would read it."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.requests import Request

from shared import web
from shared.record import RequestRecord
from shared.telemetry import Telemetry
from shared.web import path_of, query_of


def request(query_string: bytes, raw_path: bytes = b"/openai/v1/responses") -> Request:
    return Request({"type": "http", "method": "POST", "path": "/", "raw_path": raw_path, "query_string": query_string})


@pytest.mark.parametrize(
    "query",
    [b"", b"api-version=2024-10-21", b"a=1&a=2&b=", b"x=%20y+z&&=v&k", b"q=" + b"a" * 300, b"%ZZ=%E9&v=\xe9"],
)
def test_the_query_reads_as_starlette_reads_it(query: bytes) -> None:
    assert query_of(request(query)) == request(query).query_params.multi_items()
    assert query_of(request(query)) == request(query).query_params.multi_items()  # and again, cached


@given(st.binary(max_size=300))
def test_any_query_reads_as_starlette_reads_it(query: bytes) -> None:
    assert query_of(request(query)) == request(query).query_params.multi_items()


def test_a_cached_query_is_a_fresh_list_each_time() -> None:
    first = query_of(request(b"api-version=1"))
    first.append(("extra", "1"))
    assert query_of(request(b"api-version=1")) == [("api-version", "1")]


def test_the_path_is_the_raw_one_without_its_query() -> None:
    assert path_of(request(b"", b"/openai/a%2Fb?x=1")) == "/openai/a%2Fb"


class Finished(Telemetry):
    def __init__(self) -> None:
        super().__init__()
        self.finished: list[RequestRecord] = []

    def finish(self, record: RequestRecord) -> None:
        self.finished.append(record)


class Unlogged(RequestRecord):
    def fields(self) -> dict[str, Any]:
        raise AssertionError("the access line was built though nobody logs it")


def test_the_access_line_is_built_only_when_logged(caplog: pytest.LogCaptureFixture) -> None:
    telemetry = Finished()
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        web._log(RequestRecord("POST", "/x"), telemetry)
    assert json.loads(caplog.records[-1].getMessage())["path"] == "/x"
    logging.getLogger("gateway.access").setLevel(logging.WARNING)
    try:
        web._log(Unlogged("POST", "/y"), telemetry)
    finally:
        logging.getLogger("gateway.access").setLevel(logging.NOTSET)
    assert [r.path for r in telemetry.finished] == ["/x", "/y"]  # telemetry hears of every request
