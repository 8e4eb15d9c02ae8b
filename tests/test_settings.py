"""App settings: the code, the README's table and infra/ agree.

Every setting shared/config.py reads has a row in the README's app-settings table, whose last column says where
it comes from in Azure: azd environment values (then the Bicep must carry them from main.parameters.json through
main.bicep into that app setting of infra/app/function.bicep), "templates" (infra derives it), "set by Azure", or
"local only" (then nothing in Azure may set it). A new setting in config.py fails here until it is one or the other.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from tests.infra.bicep import INFRA, module, tree, variable, walk

ROOT = Path(__file__).resolve().parent.parent
# Read by the Functions platform or a library, not by shared/config.py.
PLATFORM = {
    "PYTHON_ENABLE_INIT_INDEXING",
    "HEALTH_PROBE_SCHEDULE",  # resolved by the host for the timer binding (%HEALTH_PROBE_SCHEDULE%)
    "APPLICATIONINSIGHTS_CONNECTION_STRING",  # the Functions host too
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
}
# Settings of the platform itself that users never set: documented by Microsoft, not by this README.
UNDOCUMENTED = {
    "PYTHON_ENABLE_INIT_INDEXING",
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def read_by_code() -> set[str]:
    source = (ROOT / "shared" / "config.py").read_text()
    read = set(re.findall(r'env(?:\.get\(|\[)"([A-Za-z_]+)"', source))
    return read | set(re.findall(r'split\("([A-Z_]+)"\)', source))


@cache
def readme_table() -> dict[str, str]:
    """Setting -> its "in Azure" cell, from the README's app-settings table."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("| setting | meaning | in Azure |")
    rows: dict[str, str] = {}
    for line in readme[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        name = re.match(r"`([A-Za-z0-9_<>]+)`", cells[0])
        assert name and len(cells) == 3, f"README app-settings row: {line}"
        rows[name.group(1)] = cells[2]
    return rows


def azure_source(cell: str) -> str | set[str]:
    """'local only', 'Azure', 'templates', or the azd environment values a row names."""
    for source, marker in (("local only", "local only"), ("Azure", "set by Azure"), ("templates", "templates")):
        if cell.startswith(marker) or (source == "templates" and "by the templates" in cell):
            names = set(re.findall(r"`([A-Z0-9_]+)`", cell)) if "built by" in cell else set()
            return names or source
    names = set(re.findall(r"`([A-Z0-9_]+)`", cell))
    assert names, f"README app-settings: {cell!r} names no azd environment value"
    return names


def _references(fragment: Any) -> set[str]:
    """Every identifier a parse-tree fragment mentions (access chains and ${} interpolations included)."""
    found: set[str] = set()
    for value in walk(fragment):
        if isinstance(value, str):
            found |= set(_IDENTIFIER.findall(value))
    return found


@cache
def settings_in_bicep() -> dict[str, Any]:
    """App setting -> value expression, every list function.bicep builds its settings from."""
    found = {}
    for name in ("baseSettings", "optionalSettings"):
        for setting in variable("app/function.bicep", name):
            found[setting["name"]] = setting["value"]
    return found


def _feeds(relative: str, fragment: Any, seen: set[str]) -> Iterator[str]:
    """The parameters of a file that a fragment depends on, through its variables and module outputs."""
    parsed = tree(relative)
    for name in _references(fragment) - seen:
        seen.add(name)
        if name in parsed.get("parameters", {}):
            yield name
        elif name in parsed.get("variables", {}):
            yield from _feeds(relative, parsed["variables"][name]["value"], seen)
        elif name in parsed.get("modules", {}):
            yield from _feeds(relative, parsed["modules"][name]["config"], seen)


@cache
def azd_values_of_parameters() -> dict[str, str]:
    raw = (INFRA / "main.parameters.json").read_text()
    return dict(re.findall(r'"(\w+)": \{\s*"value": "?\$\{([A-Z0-9_]+)', raw))


def azd_values_feeding(setting: str) -> set[str]:
    """The azd environment values that flow into an app setting of the Function App."""
    function_params = set(_feeds("app/function.bicep", settings_in_bicep()[setting], set()))
    wiring = module("main.bicep", "functionApp")["config"]["params"]
    main_params: set[str] = set()
    for param in function_params:
        assert param in wiring, f"function.bicep parameter {param} is not passed by main.bicep"
        main_params |= set(_feeds("main.bicep", wiring[param], set()))
    return {azd_values_of_parameters()[p] for p in main_params if p in azd_values_of_parameters()}


def test_the_scan_finds_the_settings() -> None:
    assert {"GATEWAY_CONFIG", "GATEWAY_ENTRA_TENANT_ID", "GATEWAY_TABLE_ENDPOINT"} <= read_by_code()
    assert {"GATEWAY_CONFIG", "GATEWAY_TIME_SCALE", "WEBSITE_INSTANCE_ID"} <= set(readme_table())
    assert azure_source(readme_table()["GATEWAY_TIME_SCALE"]) == "local only"
    assert azure_source(readme_table()["AZURE_CLIENT_ID"]) == "templates"
    assert azure_source(readme_table()["GATEWAY_ENTRA_REQUIRED_ROLE"]) == {"GATEWAY_ENTRA_REQUIRED_ROLE"}
    assert "GATEWAY_BACKENDS" in azd_values_feeding("GATEWAY_CONFIG")


def test_every_setting_the_code_reads_is_in_the_readme_table() -> None:
    missing = read_by_code() - set(readme_table())
    assert not missing, f"document these settings in README.md's app-settings table: {sorted(missing)}"


def test_every_setting_the_code_reads_is_set_in_azure_or_marked_local_only() -> None:
    """appSettings is replaced on every `azd provision`: what the code reads must come from the templates."""
    set_in_azure = set(settings_in_bicep())
    for setting in read_by_code():
        source = azure_source(readme_table()[setting])
        if source in ("local only", "Azure"):
            assert setting not in set_in_azure, f"{setting} is marked {source!r} in README.md but infra sets it"
        else:
            assert setting in set_in_azure, (
                f"{setting}: make it a Bicep parameter wired to an app setting (infra/app/function.bicep, "
                "main.parameters.json) or mark it 'local only' in README.md"
            )


def test_each_documented_azd_value_really_reaches_its_setting() -> None:
    for setting, cell in readme_table().items():
        source = azure_source(cell)
        if isinstance(source, set):
            feeding = azd_values_feeding(setting)
            assert source <= feeding, f"README says {sorted(source)} set {setting}; the Bicep wires {sorted(feeding)}"
        elif source == "templates":
            assert setting in settings_in_bicep(), f"README says the templates set {setting}; they do not"


def test_every_setting_azure_sets_is_read_and_documented() -> None:
    listed = [
        line.strip()
        for line in (ROOT / "infra" / "app-settings.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    unread = {name for name in listed if name not in read_by_code() | PLATFORM}
    assert not unread, f"infra sets settings nothing reads: {sorted(unread)}"
    assert "HEALTH_PROBE_SCHEDULE" in (ROOT / "function_app.py").read_text()
    undocumented = set(listed) - UNDOCUMENTED - set(readme_table())
    assert not undocumented, f"document these settings in README.md: {sorted(undocumented)}"
