"""Every app setting the code reads is documented in the README, and every one Azure sets is read by someone."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Read by the Functions platform itself, not by the gateway's code.
PLATFORM = {
    "PYTHON_ENABLE_INIT_INDEXING",
    "HEALTH_PROBE_SCHEDULE",  # resolved by the host for the timer binding (%HEALTH_PROBE_SCHEDULE%)
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
}


def read_by_code() -> set[str]:
    source = (ROOT / "shared" / "config.py").read_text()
    read = set(re.findall(r'env(?:\.get\(|\[)"([A-Za-z_]+)"', source))
    return read | set(re.findall(r'split\("([A-Z_]+)"\)', source))


def test_the_scan_finds_the_settings() -> None:
    assert {"GATEWAY_CONFIG", "GATEWAY_ENTRA_TENANT_ID", "GATEWAY_TABLE_ENDPOINT"} <= read_by_code()


def test_every_setting_the_code_reads_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = {name for name in read_by_code() if name not in readme}
    assert not missing, f"document these settings in README.md: {sorted(missing)}"


def test_every_setting_azure_sets_is_read() -> None:
    listed = [
        line.strip()
        for line in (ROOT / "infra" / "app-settings.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    unread = {name for name in listed if name not in read_by_code() | PLATFORM and not name.endswith("*")}
    assert not unread, f"infra sets settings nothing reads: {sorted(unread)}"
    assert "HEALTH_PROBE_SCHEDULE" in (ROOT / "function_app.py").read_text()
