"""The azd hooks: a configuration that could not serve is refused before anything is created, vault names salted.

The checks run on the Bicep parameters azd would pass, resolved from infra/main.parameters.json and the azd
environment values, so they also prove that mapping.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra.hooks.azd_hooks import FORGOTTEN_AFTER_DOWN, SALT_SETTING, main, new_salt, parameters, problems

HOOK = Path(__file__).resolve().parents[2] / "infra" / "hooks" / "azd_hooks.py"
ACCOUNT = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/aoai-eastus"
BACKEND = {
    "name": "eastus",
    "endpoint": "https://aoai-eastus.openai.azure.com",
    "deployment": "gpt-4o",
    "logical": "gpt-4o",
    "tpm": 240000,
}
SERVABLE = {
    "GATEWAY_BACKENDS": json.dumps([BACKEND]),
    "OPENAI_RESOURCE_IDS": json.dumps([ACCOUNT]),
    "GATEWAY_CLIENTS": json.dumps([{"name": "app-a"}]),
}
ENTRA = {"GATEWAY_ENTRA_TENANT_ID": "tenant", "GATEWAY_ENTRA_AUDIENCE": "api://aoai-gateway"}


def check(env: dict[str, str]) -> list[str]:
    return problems(parameters(env), env)


def test_a_servable_configuration_passes() -> None:
    assert check(SERVABLE) == []
    assert check({**SERVABLE, "GATEWAY_CLIENTS": "[]", **ENTRA}) == []  # Entra ID callers only


def test_no_backend_at_all_is_refused() -> None:
    (problem,) = check({**SERVABLE, "GATEWAY_BACKENDS": "[]"})
    assert "GATEWAY_BACKENDS and DEMO_REGIONS are both empty" in problem
    assert check({**SERVABLE, "GATEWAY_BACKENDS": "[]", "DEMO_REGIONS": '["eastus2"]'}) == []


def test_nobody_able_to_call_is_refused() -> None:
    (problem,) = check({**SERVABLE, "GATEWAY_CLIENTS": "[]"})
    assert "nobody could call the gateway" in problem
    # Entra ID callers need both the tenant and the audience.
    assert len(check({**SERVABLE, "GATEWAY_CLIENTS": "[]", "GATEWAY_ENTRA_TENANT_ID": "tenant"})) == 1


def test_an_entra_backend_whose_account_gets_no_role_is_refused() -> None:
    elsewhere = {**BACKEND, "name": "westus", "endpoint": "https://aoai-westus.openai.azure.com/"}
    (problem,) = check({**SERVABLE, "GATEWAY_BACKENDS": json.dumps([BACKEND, elsewhere])})
    assert problem.startswith("GATEWAY_BACKENDS[1] (westus): https://aoai-westus.openai.azure.com/")
    assert "401" in problem and "OPENAI_RESOURCE_IDS" in problem
    # The account is the endpoint's subdomain, whatever the domain and case.
    same_account = {**BACKEND, "endpoint": "https://AOAI-EASTUS.cognitiveservices.azure.com"}
    assert check({**SERVABLE, "GATEWAY_BACKENDS": json.dumps([same_account])}) == []


def test_an_api_key_backend_is_refused_its_key_could_not_reach_the_app() -> None:
    """Its key would have to be an app setting, and the templates hold none: the gateway would not start."""
    keyed = {**BACKEND, "auth": {"type": "api-key", "setting": "EASTUS_KEY"}}
    (problem,) = check({**SERVABLE, "GATEWAY_BACKENDS": json.dumps([keyed])})
    assert problem.startswith("GATEWAY_BACKENDS[0] (eastus): only")
    assert "OPENAI_RESOURCE_IDS" in problem


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"OPENAI_RESOURCE_IDS": '["aoai-eastus"]'}, "OPENAI_RESOURCE_IDS[0]"),
        ({"GATEWAY_BACKENDS": json.dumps([{"name": "eastus"}])}, "GATEWAY_BACKENDS[0]: missing endpoint"),
        ({"GATEWAY_BACKENDS": json.dumps({"name": "eastus"})}, "GATEWAY_BACKENDS: must be a JSON array"),
        ({"GATEWAY_CLIENTS": '["app-a"]'}, 'GATEWAY_CLIENTS[0]: must be an object {"name"'),
        ({"GATEWAY_CLIENTS": '[{"name": "app a"}]'}, "must be 1-64 letters, digits or dashes"),
        ({"GATEWAY_CLIENTS": json.dumps([{"name": "a" * 65}])}, "must be 1-64 letters, digits or dashes"),
        ({"GATEWAY_CLIENTS": '[{"name": "a"}, {"name": "a"}]'}, "GATEWAY_CLIENTS[1]: name 'a' is used twice"),
        ({"GATEWAY_ENTRA_DEFAULT_CLIENT": "app-b", **ENTRA}, "'app-b' is not a client of GATEWAY_CLIENTS"),
        ({"GATEWAY_ENTRA_DEFAULT_CLIENT": "app-a"}, "Entra ID callers are off"),
        ({"GATEWAY_SPN_ROLE_RESOURCE_IDS": '["/subscriptions/x"]', "GATEWAY_SPN_OBJECT_ID": "o"}, "not in OPENAI"),
        ({"GATEWAY_SPN_ROLE_RESOURCE_IDS": json.dumps([ACCOUNT])}, "GATEWAY_SPN_OBJECT_ID is not"),
        ({"GATEWAY_ROUTING": "[]"}, "GATEWAY_ROUTING: must be a JSON object"),
        ({"APP_GATEWAY_CERTIFICATE_NAME": "gateway-tls"}, "provision once without it"),
    ],
)
def test_each_misconfiguration_is_named(changes: dict[str, str], expected: str) -> None:
    found = check({**SERVABLE, **changes})
    assert found and expected in found[0], found  # the cause first (its consequences may follow)


def test_a_certificate_is_accepted_once_the_tls_vault_exists() -> None:
    env = {**SERVABLE, "APP_GATEWAY_CERTIFICATE_NAME": "gateway-tls", "AZURE_TLS_KEY_VAULT_NAME": "kv-tls-x"}
    assert check(env) == []


def test_values_that_are_not_json_are_refused_in_words(capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[tuple[str, str]] = []
    env = {**SERVABLE, "GATEWAY_BACKENDS": "[{name: eastus}]"}
    assert main(["preprovision"], env, lambda *pair: calls.append(pair)) == 1
    error = capsys.readouterr().err
    assert "not valid JSON" in error and "GATEWAY_BACKENDS" in error
    assert calls == []


def test_a_new_deployment_gets_a_salt_an_existing_one_keeps_its_names() -> None:
    salt = new_salt({})
    assert salt is not None and len(salt) == 4 and int(salt, 16) >= 0
    assert new_salt({"AZURE_KEY_VAULT_NAME": "kv-abcdefghijklm"}) is None  # deployed before salts existed
    assert new_salt({SALT_SETTING: "0a1b"}) is None


def test_preprovision_refuses_or_salts() -> None:
    calls: list[tuple[str, str]] = []
    assert main(["preprovision"], {**SERVABLE, "GATEWAY_CLIENTS": "[]"}, lambda *pair: calls.append(pair)) == 1
    assert calls == [], "a refused configuration changes nothing"
    assert main(["preprovision"], SERVABLE, lambda *pair: calls.append(pair)) == 0
    ((name, salt),) = calls
    assert name == SALT_SETTING and len(salt) == 4
    calls.clear()
    assert main(["preprovision"], {**SERVABLE, SALT_SETTING: salt}, lambda *pair: calls.append(pair)) == 0
    assert calls == []


def test_postdown_forgets_the_salt_and_the_deleted_vaults() -> None:
    calls: list[tuple[str, str]] = []
    assert main(["postdown"], {}, lambda *pair: calls.append(pair)) == 0
    assert calls == [(name, "") for name in FORGOTTEN_AFTER_DOWN]
    assert {SALT_SETTING, "AZURE_KEY_VAULT_NAME", "AZURE_TLS_KEY_VAULT_NAME"} == set(FORGOTTEN_AFTER_DOWN)
    assert main([], {}, lambda *pair: calls.append(pair)) == 2


def test_the_script_runs_as_azd_runs_it(tmp_path: Path) -> None:
    """azd runs `python3 infra/hooks/azd_hooks.py preprovision` with the values in the environment."""
    record = tmp_path / "azd-calls"
    fake_azd = tmp_path / "azd"
    fake_azd.write_text(f'#!/bin/sh\necho "$@" >> {record}\n')
    fake_azd.chmod(0o755)
    base = {"PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}

    refused = subprocess.run(
        [sys.executable, str(HOOK), "preprovision"], env=base, capture_output=True, text=True, check=False
    )
    assert refused.returncode == 1
    assert "azd provision stopped" in refused.stderr and "GATEWAY_BACKENDS and DEMO_REGIONS" in refused.stderr
    assert not record.exists()

    accepted = subprocess.run(
        [sys.executable, str(HOOK), "preprovision"],
        env={**base, **SERVABLE, "AZURE_ENV_NAME": "aoai-gw-prod"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert accepted.returncode == 0, accepted.stderr
    (call,) = record.read_text().splitlines()
    command, salt, target = call.split()[:3], call.split()[3], call.split()[4:]
    assert command == ["env", "set", SALT_SETTING] and len(salt) == 4
    assert target == ["--environment", "aoai-gw-prod"], "the salt must land in the environment being provisioned"
