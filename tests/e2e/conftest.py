"""End-to-end fixtures: real processes (simulated regions + dev host) on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dev.stack import Stack

# Compressed time: a simulated minute lasts two real seconds.
TIME_SCALE = 30.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("stack"), time_scale=TIME_SCALE, routing={"max_body_bytes": 1_048_576}) as s:
        yield s


def fresh_stack(path: Path, **kwargs: object) -> Stack:
    return Stack(path, time_scale=TIME_SCALE, **kwargs)  # type: ignore[arg-type]
