"""load_settings: inline JSON, a file, the repo default; every error names its field; secrets stay hidden."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from shared.config import DEFAULT_CONFIG_PATH, ConfigError, Secret, Settings, load_settings


def host(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "eastus",
        "endpoint": "https://aoai-eastus.openai.azure.com/",
        "deployment": "gpt-4o-e",
        "tpm": 240_000,
        **overrides,
    }


BASE: dict[str, Any] = {
    "deployments": {"gpt-4o": [host()]},
    "clients": [{"name": "app-a", "key_settings": ["KEY_A", "KEY_A_NEXT"]}],
}
BASE_ENV = {"KEY_A": "client-key-a"}


def load(doc: dict[str, Any], **env: str) -> Settings:
    return load_settings({"GATEWAY_CONFIG": json.dumps(doc), **BASE_ENV, **env})


def with_host(**overrides: Any) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    doc["deployments"]["gpt-4o"] = [host(**overrides)]
    return doc


def error(doc: dict[str, Any], **env: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(doc, **env)
    return str(info.value)


def test_inline_json() -> None:
    settings = load(BASE)
    (h,) = settings.cluster.hosts_for("gpt-4o") or ()
    assert h.endpoint == "https://aoai-eastus.openai.azure.com"  # trailing slash dropped
    assert (h.deployment, h.tpm, h.priority, h.weight, h.auth.type) == ("gpt-4o-e", 240_000, 1, 1.0, "entra")
    assert [(c.name, [k.reveal() for k in c.keys]) for c in settings.clients] == [("app-a", ["client-key-a"])]
    assert settings.credential.mode == "default"
    assert not settings.table.configured


def test_rpm_defaults_to_six_per_thousand_tpm() -> None:
    assert load(with_host(tpm=240_000)).cluster.all_hosts()[0].rpm == 1440
    assert load(with_host(tpm=150_000)).cluster.all_hosts()[0].rpm == 900
    assert load(with_host(tpm=100)).cluster.all_hosts()[0].rpm == 1  # never zero
    assert load(with_host(tpm=1000, rpm=50)).cluster.all_hosts()[0].rpm == 50


def test_a_config_file(tmp_path: Path) -> None:
    path = tmp_path / "gw.json"
    path.write_text(json.dumps(with_host(name="westus", priority=2)), encoding="utf-8")
    settings = load_settings({"GATEWAY_CONFIG": str(path), **BASE_ENV})
    assert [(h.name, h.priority) for h in settings.cluster.all_hosts()] == [("westus", 2)]


def test_an_unreadable_or_invalid_file_names_gateway_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="GATEWAY_CONFIG"):
        load_settings({"GATEWAY_CONFIG": str(tmp_path / "missing.json"), **BASE_ENV})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="GATEWAY_CONFIG"):
        load_settings({"GATEWAY_CONFIG": str(bad), **BASE_ENV})
    with pytest.raises(ConfigError, match="GATEWAY_CONFIG"):
        load_settings({"GATEWAY_CONFIG": "{oops", **BASE_ENV})


def test_the_default_config_in_the_repo_loads() -> None:
    doc = json.loads(DEFAULT_CONFIG_PATH.read_text(encoding="utf-8"))
    env = {}
    for client in doc.get("clients", []):
        for setting in client.get("key_settings", [client.get("key_setting")]):
            env[setting] = "k-" + setting
    for hosts in doc["deployments"].values():
        for h in hosts:
            if h.get("auth", {}).get("type") == "api-key":
                env[h["auth"]["setting"]] = "host-key"
    settings = load_settings(env)  # no GATEWAY_CONFIG: the file next to the code
    assert set(settings.cluster.deployments) == set(doc["deployments"])
    assert len(settings.cluster.all_hosts()) >= 1
    assert [c.name for c in settings.clients] == [c["name"] for c in doc.get("clients", [])]


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({}, "deployments"),
        ({"deployments": {}}, "deployments"),
        ({"deployments": {"gpt-4o": []}}, "deployments.gpt-4o"),
        ({"deployments": {"gpt-4o": [{k: v for k, v in host().items() if k != "tpm"}]}}, "deployments.gpt-4o[0].tpm"),
        (with_host(tpm=None), "deployments.gpt-4o[0].tpm"),
        (with_host(tpm=0), "deployments.gpt-4o[0].tpm"),
        (with_host(tpm=1.5), "deployments.gpt-4o[0].tpm"),
        (with_host(tpm=True), "deployments.gpt-4o[0].tpm"),
        (with_host(rpm=-1), "deployments.gpt-4o[0].rpm"),
        (with_host(priority=-1), "deployments.gpt-4o[0].priority"),
        (with_host(weight=0), "deployments.gpt-4o[0].weight"),
        (with_host(name=""), "deployments.gpt-4o[0].name"),
        (with_host(deployment=None), "deployments.gpt-4o[0].deployment"),
        (with_host(endpoint="ftp://aoai.example"), "deployments.gpt-4o[0].endpoint"),
        (with_host(endpoint="https://aoai.example?x=1"), "deployments.gpt-4o[0].endpoint"),
        (with_host(auth={"type": "key"}), "deployments.gpt-4o[0].auth.type"),
        (with_host(auth={"type": "api-key"}), "deployments.gpt-4o[0].auth.setting"),
        ({**BASE, "clients": {"name": "x"}}, "clients"),
        ({**BASE, "clients": [{"name": "app-b"}]}, "clients[0].key_setting"),
        ({**BASE, "clients": [{"key_setting": "KEY_A"}]}, "clients[0].name"),
        ({**BASE, "routing": {"max_retries": 3}}, "routing.max_retries"),
        ({**BASE, "routing": {"max_attempts": 0}}, "routing.max_attempts"),
        ({**BASE, "routing": {"deadline_seconds": -1}}, "routing.deadline_seconds"),
        ({**BASE, "routing": {"max_tokens_defaults": {"gpt-4o": "lots"}}}, "routing.max_tokens_defaults.gpt-4o"),
        # Misspellings that would otherwise be ignored: a limit never enforced, a default never applied.
        (with_host(wieght=3), "deployments.gpt-4o[0].wieght"),
        ({**BASE, "entra_default_clients": "app-a"}, "config.entra_default_clients"),
        ({**BASE, "routing": {"max_tokens_defaults": {"gpt4o": 100}}}, "routing.max_tokens_defaults.gpt4o"),
        (
            {
                **BASE,
                "clients": [{"name": "a", "key_setting": "KEY_A", "limits": {"deployments": {"gpt4o": {"tpm": 9}}}}],
            },
            "clients[0].limits.deployments.gpt4o",
        ),
    ],
)
def test_errors_name_the_field(doc: dict[str, Any], field: str) -> None:
    assert error(doc).startswith(field + ":")


def test_duplicate_host_names_in_one_deployment() -> None:
    doc = copy.deepcopy(BASE)
    doc["deployments"]["gpt-4o"] = [host(), host(deployment="other")]
    assert "deployments.gpt-4o" in error(doc)


def test_an_endpoint_with_credentials_is_refused_without_echoing_them() -> None:
    message = error(with_host(endpoint="https://user:hunter2@aoai.example"))
    assert message.startswith("deployments.gpt-4o[0].endpoint:")
    assert "hunter2" not in message


def test_an_api_key_host_needs_its_setting() -> None:
    doc = with_host(auth={"type": "api-key", "setting": "AOAI_KEY_EASTUS"})
    assert "AOAI_KEY_EASTUS" in error(doc)
    settings = load(doc, AOAI_KEY_EASTUS="host-secret")
    assert settings.host_keys["eastus/gpt-4o-e"].reveal() == "host-secret"


def test_a_client_needs_at_least_one_key_set() -> None:
    doc = {**BASE, "clients": [{"name": "app-b", "key_setting": "KEY_B"}]}
    message = error(doc)
    assert "KEY_B" in message
    assert "app-b" in message
    assert [k.reveal() for k in load(doc, KEY_B="b").clients[0].keys] == ["b"]


def test_both_keys_of_a_rotation_are_loaded() -> None:
    settings = load(BASE, KEY_A_NEXT="client-key-a2")
    assert [k.reveal() for k in settings.clients[0].keys] == ["client-key-a", "client-key-a2"]


def test_one_physical_deployment_must_agree_on_its_quota() -> None:
    doc = copy.deepcopy(BASE)
    doc["deployments"]["gpt-4o-latest"] = [host(tpm=100_000)]  # same name + deployment = same host key
    message = error(doc)
    assert message.startswith("deployments.gpt-4o-latest[0]:")
    assert "eastus/gpt-4o-e" in message
    doc["deployments"]["gpt-4o-latest"] = [host()]  # same quota: fine, and counted once
    assert len(load(doc).cluster.all_hosts()) == 1


def test_routing_overrides() -> None:
    routing = {"default_max_tokens": 1000, "wait_budget_seconds": 0, "max_tokens_defaults": {"gpt-4o": 300}}
    settings = load({**BASE, "routing": routing})
    assert settings.routing.max_tokens_default("gpt-4o") == 300
    assert settings.routing.max_tokens_default("other") == 1000
    assert settings.routing.wait_budget_seconds == 0


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"GATEWAY_CREDENTIAL": "password"}, "GATEWAY_CREDENTIAL"),
        ({"GATEWAY_CREDENTIAL": "spn"}, "GATEWAY_SPN_TENANT_ID"),
        (
            {
                "GATEWAY_CREDENTIAL": "spn",
                "GATEWAY_SPN_TENANT_ID": "t",
                "GATEWAY_SPN_CLIENT_ID": "c",
                "GATEWAY_SPN_SECRET_NAME": "s",
            },
            "GATEWAY_KEYVAULT_URI",
        ),
        ({"GATEWAY_CREDENTIAL": "static"}, "GATEWAY_STATIC_TOKEN"),
        ({"GATEWAY_TABLE_ENDPOINT": "aoai.table.core.windows.net"}, "GATEWAY_TABLE_ENDPOINT"),
        ({"GATEWAY_TIME_SCALE": "0"}, "GATEWAY_TIME_SCALE"),
    ],
)
def test_environment_errors_name_the_setting(env: dict[str, str], field: str) -> None:
    assert error(BASE, **env).startswith(field + ":")


def test_spn_settings() -> None:
    env = {
        "GATEWAY_CREDENTIAL": "spn",
        "GATEWAY_SPN_TENANT_ID": "t",
        "GATEWAY_SPN_CLIENT_ID": "c",
        "GATEWAY_SPN_SECRET_NAME": "s",
        "GATEWAY_KEYVAULT_URI": "https://kv.vault.azure.net",
    }
    credential = load(BASE, **env).credential
    assert (credential.mode, credential.spn_tenant_id, credential.keyvault_uri) == (
        "spn",
        "t",
        "https://kv.vault.azure.net",
    )


def test_secrets_never_show_in_a_repr() -> None:
    secret = Secret("hunter2")
    assert "hunter2" not in repr(secret)
    assert "hunter2" not in str(secret)
    assert f"{secret}" == str(secret)
    doc = with_host(auth={"type": "api-key", "setting": "HOST_KEY"})
    settings = load(
        doc,
        HOST_KEY="host-hunter2",
        GATEWAY_CREDENTIAL="static",
        GATEWAY_STATIC_TOKEN="token-hunter2",
        GATEWAY_TABLE_CONNECTION_STRING="AccountKey=table-hunter2",
    )
    text = repr(settings)
    for value in ("client-key-a", "host-hunter2", "token-hunter2", "table-hunter2"):
        assert value not in text
    assert settings.credential.static_token is not None
    assert settings.credential.static_token.reveal() == "token-hunter2"


UNRESOLVED = "@Microsoft.KeyVault(VaultName=kv;SecretName=gateway-key-app-b)"


def test_an_unresolved_key_vault_reference_is_never_a_key() -> None:
    doc = {**BASE, "clients": [*BASE["clients"], {"name": "app-b", "key_setting": "KEY_B"}]}
    settings = load(doc, KEY_B=UNRESOLVED, KEY_A_NEXT=UNRESOLVED)
    # app-b has no usable key and is left out; app-a keeps its resolved key only.
    assert [c.name for c in settings.clients] == ["app-a"]
    assert [k.reveal() for k in settings.clients[0].keys] == ["client-key-a"]
    assert any("KEY_B" in w and "Key Vault" in w for w in settings.warnings)
    assert all(UNRESOLVED not in w for w in settings.warnings)


def test_an_unresolved_reference_for_an_upstream_key_stops_start_up() -> None:
    message = error(with_host(auth={"type": "api-key", "setting": "HOST_KEY"}), HOST_KEY=UNRESOLVED)
    assert message.startswith("HOST_KEY:") and "Key Vault" in message


def test_somebody_must_be_able_to_call() -> None:
    assert error({**BASE, "clients": []}).startswith("clients:")
    entra = {"GATEWAY_ENTRA_TENANT_ID": "t", "GATEWAY_ENTRA_AUDIENCE": "api://gw"}
    assert load({**BASE, "clients": []}, **entra).entra.enabled


def test_key_secrets_need_the_vault_and_valid_names() -> None:
    doc = {**BASE, "clients": [{"name": "app-c", "key_secrets": ["gateway-key-app-c"]}]}
    assert error(doc).startswith("GATEWAY_KEYVAULT_URI:")
    settings = load(doc, GATEWAY_KEYVAULT_URI="https://kv.vault.azure.net")
    assert settings.clients[0].key_secrets == ("gateway-key-app-c",) and settings.clients[0].keys == ()
    bad = {**BASE, "clients": [{"name": "app-c", "key_secrets": ["no/slashes"]}]}
    assert error(bad, GATEWAY_KEYVAULT_URI="https://kv").startswith("clients[0].key_secrets[0]:")
