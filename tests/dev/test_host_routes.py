"""dev.host.starlette_path: Azure Functions route templates as Starlette paths."""

from __future__ import annotations

import pytest

from dev.host import starlette_path


@pytest.mark.parametrize(
    ("route", "path"),
    [
        ("openai/{*path}", "/openai/{path:path}"),
        ("healthz", "/healthz"),
        ("/status/", "/status"),
        ("items/{id:int}", "/items/{id}"),
        ("items/{id}/parts/{*rest}", "/items/{id}/parts/{rest:path}"),
    ],
)
def test_starlette_path(route: str, path: str) -> None:
    assert starlette_path(route) == path
