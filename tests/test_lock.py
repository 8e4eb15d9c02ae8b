"""The dependency locks: every package pinned with hashes, and the locks agree with their inputs.

requirements.txt is what Azure's remote build installs; requirements-dev.txt is what CI and ./dev/*.sh install
(the runtime packages at the same versions, plus the tools). Both are compiled from the *.in files; these tests
fail when someone edits an input without recompiling, or a lock by hand.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCKS = {"requirements.txt": "requirements.in", "requirements-dev.txt": "requirements-dev.in"}
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+?)\s*\\?$")


@cache
def locked(lock: str) -> dict[str, tuple[str, frozenset[str]]]:
    """Package -> (version, hashes) of a compiled lock."""
    pins: dict[str, tuple[str, frozenset[str]]] = {}
    current = ""
    for line in (ROOT / lock).read_text().splitlines():
        if match := _PIN.match(line):
            current = canonicalize_name(match.group(1))
            assert current not in pins, f"{lock}: {current} is pinned twice"
            pins[current] = (match.group(2), frozenset())
        elif hashed := re.match(r"^\s+--hash=(sha256:[0-9a-f]{64})", line):
            version, hashes = pins[current]
            pins[current] = (version, hashes | {hashed.group(1)})
        else:
            assert not line or line.lstrip().startswith("#"), f"{lock}: not a pin, hash or comment: {line!r}"
    return pins


def inputs(source: str) -> list[Requirement]:
    """The requirements of an input file, following its -r includes (-c constraints are not inputs)."""
    found = []
    for raw in (ROOT / source).read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith("-r "):
            found += inputs(line[3:].strip())
        elif line and not line.startswith("-"):
            found.append(Requirement(line))
    return found


def closure(requirements: list[Requirement]) -> set[str]:
    """Every distribution the requirements pull in, read from the installed metadata (this venv is the lock)."""
    seen: set[str] = set()
    pending = [(canonicalize_name(req.name), frozenset(req.extras)) for req in requirements]
    while pending:
        name, extras = pending.pop()
        key = f"{name}[{','.join(sorted(extras))}]"
        if key in seen:
            continue
        seen.add(key)
        for spec in metadata.distribution(name).requires or []:
            dependency = Requirement(spec)
            wanted = dependency.marker is None or any(
                dependency.marker.evaluate({"extra": extra}) for extra in extras | {""}
            )
            if wanted:
                pending.append((canonicalize_name(dependency.name), frozenset(dependency.extras)))
    return {key.split("[", 1)[0] for key in seen}


def test_the_parser_reads_the_locks() -> None:
    assert {"azure-functions", "azure-monitor-opentelemetry", "opentelemetry-sdk"} <= set(locked("requirements.txt"))
    assert {"pytest", "checkov", "playwright", "pytest-timeout", "uv"} <= set(locked("requirements-dev.txt"))
    assert not {"pytest", "checkov", "playwright"} & set(locked("requirements.txt")), "dev tools in the runtime lock"


@pytest.mark.parametrize("lock", LOCKS)
def test_every_package_is_pinned_with_hashes(lock: str) -> None:
    unhashed = [name for name, (_, hashes) in locked(lock).items() if not hashes]
    assert not unhashed, f"{lock}: pins without --hash: {unhashed}"


@pytest.mark.parametrize(("lock", "source"), LOCKS.items())
def test_every_input_is_locked_at_a_version_it_allows(lock: str, source: str) -> None:
    pins = locked(lock)
    for requirement in inputs(source):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{source} asks for {requirement}, {lock} has no {name}: recompile the lock"
        version = pins[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{source} asks for {requirement}, {lock} pins {name}=={version}: recompile the lock"
        )


@pytest.mark.parametrize(("lock", "source"), LOCKS.items())
def test_the_lock_holds_exactly_what_its_inputs_pull_in(lock: str, source: str) -> None:
    needed = closure(inputs(source))
    pinned = set(locked(lock))
    assert not needed - pinned, f"{lock} lacks {sorted(needed - pinned)} that {source} pulls in: recompile the lock"
    assert not pinned - needed, f"{lock} pins {sorted(pinned - needed)} that {source} no longer needs: recompile"


def test_this_environment_is_the_dev_lock() -> None:
    """The tests run on exactly the pinned versions (./dev/bootstrap.sh reinstalls when the lock changes)."""
    drift = {
        name: (version, metadata.version(name))
        for name, (version, _) in locked("requirements-dev.txt").items()
        if metadata.version(name) != version
    }
    assert not drift, f"installed versions differ from requirements-dev.txt (pinned, installed): {drift}"


def test_azure_installs_what_ci_tests() -> None:
    runtime, dev = locked("requirements.txt"), locked("requirements-dev.txt")
    differs = {name: (pin, dev.get(name)) for name, pin in runtime.items() if dev.get(name) != pin}
    assert not differs, f"requirements.txt and requirements-dev.txt disagree (runtime, dev): {differs}"
