"""Offline checks of the Bicep in infra/.

The Bicep compiler is not available offline, so the templates are validated three ways:
- every .bicep file parses with pycep-parser (the parser checkov itself uses);
- checkov's Bicep scan passes with no failed check and no parse error (waivers live next to the
  resource as `//checkov:skip=CKV_...: reason`);
- structural assertions on the pycep parse trees: the properties that make the gateway work and keep
  it keyless, which a string search alone could not prove.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any, cast

import pytest
from pycep import BicepParser

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))

OPENAI_USER_ROLE_ID = "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd"
KEY_VAULT_SECRETS_USER_ROLE_ID = "4633458b-17de-408a-b874-0445c86b69e6"
STORAGE_ROLE_IDS = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",  # Storage Blob Data Owner
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",  # Storage Table Data Contributor
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88",  # Storage Queue Data Contributor
}
REQUIRED_OUTPUTS = {
    "AZURE_LOCATION",
    "AZURE_RESOURCE_GROUP",
    "GATEWAY_URL",
    "GATEWAY_DNS_NAME",
    "AZURE_FUNCTION_APP_NAME",
    "AZURE_KEY_VAULT_URI",
    "AZURE_KEY_VAULT_NAME",
    "AZURE_STORAGE_ACCOUNT_NAME",
    "AZURE_MANAGED_IDENTITY_CLIENT_ID",
    "APPLICATIONINSIGHTS_NAME",
}
GATEWAY_HOST_KEYS = {"name", "endpoint", "deployment", "tpm", "rpm", "priority", "weight", "auth"}
BACKEND_PARAM_KEYS = {"name", "endpoint", "deployment", "logical", "tpm", "rpm", "priority", "weight"}


# --------------------------------------------------------------------------------------------------
# Parse-tree helpers
# --------------------------------------------------------------------------------------------------


@cache
def _parser() -> BicepParser:
    return BicepParser()


@cache
def tree(relative: str) -> dict[str, Any]:
    """The pycep parse tree of infra/<relative>."""
    return cast(dict[str, Any], _parser().parse(file_path=INFRA / relative))


def unwrap(value: Any) -> Any:
    """Strip pycep's loop (`[for ...]`) and condition (`if (...)`) wrappers off a declaration body."""
    while isinstance(value, dict) and "config" in value and ("loop_type" in value or "condition" in value):
        value = value["config"]
    return value


def resources(relative: str, type_: str) -> dict[str, dict[str, Any]]:
    """Resources of one type in a file: symbolic name -> body (loop/condition unwrapped)."""
    found = {}
    for name, decl in tree(relative).get("resources", {}).items():
        if decl["type"] == type_:
            found[name] = unwrap(decl["config"])
    return found


def the_resource(relative: str, type_: str) -> Any:
    found = resources(relative, type_)
    assert len(found) == 1, f"{relative}: expected one {type_}, found {sorted(found)}"
    return next(iter(found.values()))


def variable(relative: str, name: str) -> Any:
    variables = tree(relative).get("variables", {})
    assert name in variables, f"{relative}: no variable {name!r}"
    return variables[name]["value"]


def module(relative: str, name: str) -> Any:
    modules = tree(relative).get("modules", {})
    assert name in modules, f"{relative}: no module {name!r}"
    return modules[name]


def render(expr: Any) -> str | None:
    """Render an access chain (a.b[c].d) or a plain identifier/string; None for anything else."""
    if isinstance(expr, str):
        return expr
    if isinstance(expr, dict) and "operator" in expr:
        kind, operands = expr["operator"]["type"], expr["operator"]["operands"]
        left, right = render(operands.get("operand_1")), render(operands.get("operand_2"))
        if left is not None and right is not None:
            if kind == "property_accessor":
                return f"{left}.{right}"
            if kind == "index_accessor":
                return f"{left}[{right}]"
    return None


def function(expr: Any, type_: str) -> Any:
    assert isinstance(expr, dict) and "function" in expr, f"expected a {type_}() call, got {expr!r}"
    call = expr["function"]
    assert call["type"] == type_, f"expected {type_}(), got {call['type']}()"
    return call


def key(name: str) -> str:
    """Object keys keep their quotes in pycep when they are quoted in Bicep."""
    return name.strip("'")


def walk(value: Any) -> Iterator[Any]:
    """Every value nested in a parse-tree fragment, the fragment included."""
    yield value
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for child in children:
        yield from walk(child)


def description(decl: dict[str, Any]) -> str:
    for decorator in decl.get("decorators", []):
        if decorator["type"] == "description":
            return str(decorator["argument"]).strip()
    return ""


def app_settings_manifest() -> set[str]:
    lines = (INFRA / "app-settings.txt").read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")}


# --------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------


def test_infra_has_the_expected_modules() -> None:
    names = {path.relative_to(INFRA).as_posix() for path in BICEP_FILES}
    assert {
        "main.bicep",
        "app/function.bicep",
        "app/storage.bicep",
        "app/keyvault.bicep",
        "app/monitoring.bicep",
        "app/appgateway.bicep",
        "app/network.bicep",
        "app/identity.bicep",
        "app/openai-rbac.bicep",
        "app/openai-demo.bicep",
        "app/gateway-config.bicep",
        "app/gateway-config-group.bicep",
    } <= names


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_bicep_file_parses(path: Path) -> None:
    parsed = tree(path.relative_to(INFRA).as_posix())
    assert parsed.get("resources") or parsed.get("modules") or parsed.get("outputs"), f"{path} parsed to nothing"


def test_every_local_module_path_exists() -> None:
    for path in BICEP_FILES:
        for name, decl in tree(path.relative_to(INFRA).as_posix()).get("modules", {}).items():
            target = path.parent / decl["detail"]["path"]
            assert target.is_file(), f"{path.name}: module {name} points at missing {target}"


def test_main_is_subscription_scoped_and_creates_the_resource_group() -> None:
    assert tree("main.bicep")["globals"]["scope"]["value"] == "subscription"
    rg = the_resource("main.bicep", "Microsoft.Resources/resourceGroups")
    assert rg["name"] == "${abbrs.resourceGroup}${environmentName}"
    assert json.loads((INFRA / "abbreviations.json").read_text())["resourceGroup"] == "rg-"
    assert {key(k): v for k, v in variable("main.bicep", "tags").items()} == {"azd-env-name": "environmentName"}
    # resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
    token = function(variable("main.bicep", "resourceToken"), "to_lower")["parameters"]["string_to_change"]
    unique = function(token, "unique_string")["parameters"]
    assert unique["base_string"]["function"] == {
        "type": "subscription",
        "parameters": {"subscription_id": None},
        "property_name": "id",
    }
    assert (unique["extra_string_1"], unique["extra_string_2"]) == ("environmentName", "location")


# --------------------------------------------------------------------------------------------------
# Application Gateway
# --------------------------------------------------------------------------------------------------


def _gateway() -> Any:
    return the_resource("app/appgateway.bicep", "Microsoft.Network/applicationGateways")["properties"]


def test_probe_is_get_healthz_over_https() -> None:
    probes = _gateway()["probes"]
    assert len(probes) == 1
    probe = probes[0]["properties"]
    assert probe["path"] == "/healthz"
    assert probe["protocol"] == "Https"
    assert probe["pickHostNameFromBackendHttpSettings"] is True
    assert probe["match"]["statusCodes"] == ["200-399"]
    # The backend settings use this probe.
    settings = _gateway()["backendHttpSettingsCollection"][0]["properties"]
    probe_id = variable("app/appgateway.bicep", settings["probe"]["id"])
    assert probe_id.endswith(f"/probes/{probes[0]['name']}")


def test_backend_pool_targets_the_function_app_default_host_name() -> None:
    pools = _gateway()["backendAddressPools"]
    assert len(pools) == 1
    addresses = pools[0]["properties"]["backendAddresses"]
    assert addresses == [{"fqdn": "functionAppHostName"}]
    assert "functionAppHostName" in tree("app/appgateway.bicep")["parameters"]
    # main.bicep wires the Function App module's output into it ...
    params = module("main.bicep", "appGateway")["config"]["params"]
    assert render(params["functionAppHostName"]) == "functionApp.outputs.defaultHostName"
    assert module("main.bicep", "functionApp")["detail"]["path"] == "app/function.bicep"
    # ... which is the site's default host name.
    output = tree("app/function.bicep")["outputs"]["defaultHostName"]["value"]
    assert render(output) == "functionApp.properties.defaultHostName"
    assert "functionApp" in resources("app/function.bicep", "Microsoft.Web/sites")


def test_backend_settings_https_no_affinity_long_timeout() -> None:
    settings = _gateway()["backendHttpSettingsCollection"]
    assert len(settings) == 1
    props = settings[0]["properties"]
    assert props["port"] == 443
    assert props["protocol"] == "Https"
    assert props["cookieBasedAffinity"] == "Disabled"
    assert props["pickHostNameFromBackendAddress"] is True
    timeout_param = tree("app/appgateway.bicep")["parameters"][props["requestTimeout"]]
    assert timeout_param["default"] >= 230
    assert tree("main.bicep")["parameters"]["appGatewayRequestTimeoutSeconds"]["default"] >= 230


def test_streaming_passes_through_unbuffered() -> None:
    assert _gateway()["globalConfiguration"]["enableResponseBuffering"] is False


def test_public_ip_is_standard_static_with_dns_label() -> None:
    ip = the_resource("app/appgateway.bicep", "Microsoft.Network/publicIPAddresses")
    assert ip["sku"]["name"] == "Standard"
    assert ip["properties"]["publicIPAllocationMethod"] == "Static"
    assert ip["properties"]["dnsSettings"]["domainNameLabel"] == "dnsLabel"
    fqdn = tree("app/appgateway.bicep")["outputs"]["fqdn"]["value"]
    assert render(fqdn) == "publicIp.properties.dnsSettings.fqdn"
    main_outputs = tree("main.bicep")["outputs"]
    assert render(main_outputs["GATEWAY_DNS_NAME"]["value"]) == "appGateway.outputs.fqdn"
    assert main_outputs["GATEWAY_URL"]["value"].endswith("://${appGateway.outputs.fqdn}")


def test_listeners_http_always_https_with_a_key_vault_certificate() -> None:
    gateway = _gateway()
    listeners = gateway["httpListeners"]["operator"]["operands"]
    assert listeners["condition"] == "hasCertificate"
    without_cert = [variable("app/appgateway.bicep", name) for name in listeners["false_value"]]
    with_cert = [variable("app/appgateway.bicep", name) for name in listeners["true_value"]]
    assert [item["properties"]["protocol"] for item in without_cert] == ["Http"]
    assert sorted(item["properties"]["protocol"] for item in with_cert) == ["Http", "Https"]
    certificates = gateway["sslCertificates"]["operator"]["operands"]["true_value"]
    assert certificates[0]["properties"]["keyVaultSecretId"] == "certificateSecretId"
    # With a certificate the gateway identity may read Key Vault secrets.
    keyvault_params = module("main.bicep", "keyVault")["config"]["params"]
    assert keyvault_params["grantGatewayAccess"] == "hasCertificate"
    role = resources("app/keyvault.bicep", "Microsoft.Authorization/roleAssignments")["gatewaySecretsUser"]
    assert role["properties"]["principalId"] == "gatewayPrincipalId"
    assert tree("app/keyvault.bicep")["resources"]["gatewaySecretsUser"]["config"]["condition"] == "grantGatewayAccess"
    assert variable("app/keyvault.bicep", "secretsUserRoleId") == KEY_VAULT_SECRETS_USER_ROLE_ID


def test_waf_policy_owasp_32_with_body_inspection() -> None:
    policy = the_resource("app/appgateway.bicep", "Microsoft.Network/ApplicationGatewayWebApplicationFirewallPolicies")[
        "properties"
    ]
    assert policy["managedRules"]["managedRuleSets"] == [{"ruleSetType": "OWASP", "ruleSetVersion": "3.2"}]
    settings = policy["policySettings"]
    assert settings["mode"] == "wafMode"
    assert tree("app/appgateway.bicep")["parameters"]["wafMode"]["default"] == "Prevention"
    assert settings["requestBodyCheck"] is True
    assert 0 < settings["maxRequestBodySizeInKb"] <= 2000
    sku = variable("app/appgateway.bicep", "skuName")["operator"]["operands"]
    assert (sku["condition"], sku["true_value"], sku["false_value"]) == ("enableWaf", "WAF_v2", "Standard_v2")
    attach = _gateway()["firewallPolicy"]["operator"]["operands"]
    assert attach["condition"] == "enableWaf"
    assert render(attach["true_value"]["id"]) == "wafPolicy.id"


# --------------------------------------------------------------------------------------------------
# Function App
# --------------------------------------------------------------------------------------------------


def _site() -> Any:
    return the_resource("app/function.bicep", "Microsoft.Web/sites")


def test_function_app_runs_python_311_on_flex_consumption_as_the_uami() -> None:
    plan = the_resource("app/function.bicep", "Microsoft.Web/serverfarms")
    assert plan["sku"] == {"tier": "FlexConsumption", "name": "FC1"}
    site = _site()
    assert site["kind"] == "functionapp,linux"
    assert site["identity"]["type"] == "UserAssigned"
    assert [key(k) for k in site["identity"]["userAssignedIdentities"]] == ["${identityId}"]
    config = site["properties"]["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    storage = config["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"] == {
        "type": "UserAssignedIdentity",
        "userAssignedIdentityResourceId": "identityId",
    }
    scale = config["scaleAndConcurrency"]
    assert {"maximumInstanceCount", "instanceMemoryMB"} <= set(scale)
    assert site["properties"]["httpsOnly"] is True
    tags = function(site["tags"], "union")["parameters"]
    assert {key(k): v for k, v in tags["arg_2"].items()} == {"azd-service-name": "api"}


def test_function_app_only_reachable_from_the_gateway_subnet() -> None:
    site_config = _site()["properties"]["siteConfig"]
    assert site_config["ipSecurityRestrictionsDefaultAction"] == "Deny"
    rules = site_config["ipSecurityRestrictions"]
    assert [(rule["action"], rule["vnetSubnetResourceId"]) for rule in rules] == [("Allow", "appGatewaySubnetId")]
    # The scm site keeps its own rules so that `azd deploy` works ...
    assert site_config["scmIpSecurityRestrictionsUseMain"] is False
    # ... and takes Entra ID only.
    policies = resources("app/function.bicep", "Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert sorted(p["name"] for p in policies.values()) == ["ftp", "scm"]
    assert all(p["properties"]["allow"] is False for p in policies.values())
    # The subnet the rule allows is the gateway's subnet, which has the Microsoft.Web service endpoint.
    main_modules = tree("main.bicep")["modules"]
    function_subnet = render(main_modules["functionApp"]["config"]["params"]["appGatewaySubnetId"])
    gateway_subnet = render(main_modules["appGateway"]["config"]["params"]["subnetId"])
    assert function_subnet == gateway_subnet == "network.outputs.appGatewaySubnetId"
    vnet = the_resource("app/network.bicep", "Microsoft.Network/virtualNetworks")
    subnets = vnet["properties"]["subnets"]
    assert len(subnets) == 1
    endpoints = [e["service"] for e in subnets[0]["properties"]["serviceEndpoints"]]
    assert endpoints == ["Microsoft.Web"]
    output = tree("app/network.bicep")["outputs"]["appGatewaySubnetId"]["value"]
    assert function(output, "resource_id")["parameters"]["resource_name_2"] == "appGatewaySubnetName"
    assert subnets[0]["name"] == "appGatewaySubnetName"
    assert variable("app/network.bicep", "appGatewaySubnetName") == "snet-appgw"


def _settings_set_by_function_module() -> dict[str, Any]:
    """Setting name -> value expression; siteConfig.appSettings is a list of {name, value} (or concat() of such)."""
    site_config = _site()["properties"]["siteConfig"]
    literal: dict[str, Any] = {}

    def collect(expr: Any) -> None:
        if isinstance(expr, str):
            collect(variable("app/function.bicep", expr))
        elif isinstance(expr, dict) and "function" in expr:
            for argument in function(expr, "concat")["parameters"].values():
                collect(argument)
        else:
            assert isinstance(expr, list), f"app settings must be literal {{name, value}} objects, got {expr!r}"
            for setting in expr:
                assert set(setting) == {"name", "value"}, setting
                assert isinstance(setting["name"], str) and "${" not in setting["name"], setting
                assert setting["name"] not in literal, f"{setting['name']} is set twice"
                literal[setting["name"]] = setting["value"]

    collect(site_config["appSettings"])
    return literal


def test_every_app_setting_the_code_reads_is_set_and_nothing_else() -> None:
    manifest = app_settings_manifest()
    assert not [name for name in manifest if "*" in name], "app-settings.txt lists a per-client wildcard setting"
    assert set(_settings_set_by_function_module()) == manifest


def test_gateway_keys_are_key_vault_secrets_the_code_reads_with_the_uami() -> None:
    # main.bicep: one entry per gatewayClients item, {name, key_secrets: [gateway-key-<name>, gateway-key-<name>-next]}.
    entries = variable("main.bicep", "gatewayClientEntries")
    loop = entries["loop_type"]["detail"]
    assert loop["array_name"] == "gatewayClients"
    item = loop["item_name"]
    assert entries["config"] == {
        "name": item,
        "key_secrets": [f"gateway-key-${{{item}}}", f"gateway-key-${{{item}}}-next"],
    }
    # gateway-config.bicep passes them through into GATEWAY_CONFIG's "clients" ...
    assert module("main.bicep", "gatewayConfig")["config"]["params"]["clients"] == "gatewayClientEntries"
    clients = variable("app/gateway-config.bicep", "clientEntries")
    assert clients["loop_type"]["detail"]["array_name"] == "clients"
    client = clients["loop_type"]["detail"]["item_name"]
    assert {k: render(v) for k, v in clients["config"].items()} == {
        "name": f"{client}.name",
        "key_secrets": f"{client}.key_secrets",
    }
    # ... and the code reads them from the vault named by GATEWAY_KEYVAULT_URI ...
    settings = _settings_set_by_function_module()
    assert render(settings["GATEWAY_KEYVAULT_URI"]) == "vault.properties.vaultUri"
    vault = tree("app/function.bicep")["resources"]["vault"]
    assert vault["existing"] is True and vault["config"]["name"] == "keyVaultName"
    function_params = module("main.bicep", "functionApp")["config"]["params"]
    assert render(function_params["keyVaultName"]) == "keyVault.outputs.name"
    # ... with the Function's identity, which holds Key Vault Secrets User on that vault.
    assert render(function_params["identityId"]) == "identity.outputs.apiIdentityId"
    assert settings["AZURE_CLIENT_ID"] == "identityClientId"
    assert render(function_params["identityClientId"]) == "identity.outputs.apiClientId"
    keyvault_params = module("main.bicep", "keyVault")["config"]["params"]
    assert render(keyvault_params["functionPrincipalId"]) == "identity.outputs.apiPrincipalId"
    role = resources("app/keyvault.bicep", "Microsoft.Authorization/roleAssignments")["functionSecretsUser"]
    assert role["scope"] == "vault"
    assert role["properties"]["principalId"] == "functionPrincipalId"
    definition = function(role["properties"]["roleDefinitionId"], "subscription_resource_id")["parameters"]
    assert definition["resource_name_1"] == "secretsUserRoleId"
    assert variable("app/keyvault.bicep", "secretsUserRoleId") == KEY_VAULT_SECRETS_USER_ROLE_ID


def test_no_app_setting_is_a_key_vault_reference() -> None:
    """Client keys are no longer GATEWAY_KEY_* = @Microsoft.KeyVault(...) settings, which only a restart refreshes."""
    settings = _settings_set_by_function_module()
    assert not [name for name in settings if name.startswith("GATEWAY_KEY_")]
    references = [
        value
        for value in walk(list(settings.values()))
        if isinstance(value, str) and "@microsoft.keyvault(" in value.lower()
    ]
    assert not references, f"Key Vault reference app settings: {references}"
    # Nothing left to resolve them, and nothing in the Function module (or anywhere in infra) builds one.
    assert "keyVaultReferenceIdentity" not in _site()["properties"]
    for path in BICEP_FILES:
        assert "@microsoft.keyvault(" not in path.read_text().lower(), f"{path.name} builds a Key Vault reference"
    assert "gatewayClientEntries" not in tree("app/function.bicep").get("parameters", {})
    assert "gatewayClientEntries" not in module("main.bicep", "functionApp")["config"]["params"]


def test_app_setting_values() -> None:
    literal = _settings_set_by_function_module()
    assert literal["PYTHON_ENABLE_INIT_INDEXING"] == "1"
    assert literal["GATEWAY_CONFIG"] == "gatewayConfigJson"
    assert render(literal["GATEWAY_TABLE_ENDPOINT"]) == "storage.properties.primaryEndpoints.table"
    assert render(literal["GATEWAY_KEYVAULT_URI"]) == "vault.properties.vaultUri"
    assert literal["AZURE_CLIENT_ID"] == "identityClientId"
    assert literal["AzureWebJobsStorage__clientId"] == "identityClientId"
    assert literal["AzureWebJobsStorage__credential"] == "managedidentity"
    assert render(literal["AzureWebJobsStorage__accountName"]) == "storage.name"
    assert literal["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "ClientId=${identityClientId};Authorization=AAD"
    credential = literal["GATEWAY_CREDENTIAL"]["operator"]["operands"]
    assert (credential["true_value"], credential["false_value"]) == ("spn", "managed-identity")
    use_spn = variable("app/function.bicep", credential["condition"])["operator"]
    assert use_spn["type"] == "not"
    assert function(use_spn["operands"]["bool_value"], "empty")["parameters"] == {"item_to_test": "spnClientId"}
    assert literal["HEALTH_PROBE_SCHEDULE"] == "healthProbeSchedule"
    assert tree("app/function.bicep")["parameters"]["healthProbeSchedule"]["default"] == "*/30 * * * * *"
    assert tree("main.bicep")["parameters"]["healthProbeSchedule"]["default"] == "*/30 * * * * *"
    # Telemetry publisher role for the identity named in the authentication string.
    role = the_resource("app/monitoring.bicep", "Microsoft.Authorization/roleAssignments")
    assert role["properties"]["principalId"] == "publisherPrincipalId"
    insights = the_resource("app/monitoring.bicep", "Microsoft.Insights/components")
    assert insights["properties"]["DisableLocalAuth"] is True


# --------------------------------------------------------------------------------------------------
# Gateway configuration (GATEWAY_CONFIG)
# --------------------------------------------------------------------------------------------------


def test_gateway_config_json_shape() -> None:
    main_modules = tree("main.bicep")["modules"]
    assert main_modules["gatewayConfig"]["detail"]["path"] == "app/gateway-config.bicep"
    params = main_modules["gatewayConfig"]["config"]["params"]
    backends = function(params["backends"], "concat")["parameters"]
    assert (backends["arg_1"], backends["arg_2"]) == ("gatewayBackends", "demoBackends")
    assert params["clients"] == "gatewayClientEntries"
    # Demo accounts join the configuration with the same fields as the parameter.
    assert set(unwrap(variable("main.bicep", "demoBackends"))) == BACKEND_PARAM_KEYS

    # GATEWAY_CONFIG = string({"deployments": json('{<entries joined>}'), "clients": [...]})
    function_params = main_modules["functionApp"]["config"]["params"]
    assert function_params["gatewayConfigJson"] == "gatewayConfigJson"
    document = function(variable("main.bicep", "gatewayConfigJson"), "string")["parameters"]["value_to_convert"]
    assert set(document) == {"deployments", "clients"}
    deployments = function(document["deployments"], "json")["parameters"]["arg_1"]
    assert deployments == "{${join(gatewayConfig.outputs.deploymentEntries, ', ')}}"
    assert render(document["clients"]) == "gatewayConfig.outputs.clients"

    config_outputs = tree("app/gateway-config.bicep")["outputs"]
    assert config_outputs["clients"]["value"] == "clientEntries"
    assert set(unwrap(variable("app/gateway-config.bicep", "clientEntries"))) == {"name", "key_secrets"}
    # One '"<logical>": [hosts]' entry per distinct logical name, from one group module each.
    entries = config_outputs["deploymentEntries"]["value"]
    assert entries["loop_type"]["detail"]["array_name"] == "logicalNames"
    assert render(entries["config"]) == "groups[i].outputs.entry"
    groups = module("app/gateway-config.bicep", "groups")
    assert groups["detail"]["path"] == "gateway-config-group.bicep"
    assert groups["config"]["loop_type"]["detail"]["array_name"] == "logicalNames"
    distinct = function(variable("app/gateway-config.bicep", "logicalNames"), "union")["parameters"]
    assert distinct == {"arg_1": "backendLogicalNames", "arg_2": []}

    group_outputs = tree("app/gateway-config-group.bicep")["outputs"]
    assert group_outputs["entry"]["value"] == '"${logical}": ${string(hosts)}'
    matching = function(variable("app/gateway-config-group.bicep", "matching"), "filter")["parameters"]
    assert matching["input_array"] == "backends"
    hosts = unwrap(variable("app/gateway-config-group.bicep", "hosts"))
    assert set(hosts) == GATEWAY_HOST_KEYS
    assert {"type": "entra"} in list(walk(hosts["auth"]))  # default auth when a backend has none


def test_generated_config_shape_is_accepted_by_the_gateway_config_loader() -> None:
    """The keys the Bicep emits (read from the parse trees) form a document shared/config.py accepts."""
    config = pytest.importorskip("shared.config")
    example_host = {
        "name": "eastus",
        "endpoint": "https://aoai-eastus.openai.azure.com",
        "deployment": "gpt-4o",
        "tpm": 240000,
        "rpm": 1440,
        "priority": 1,
        "weight": 1,
        "auth": {"type": "entra"},
    }
    # The client entry main.bicep builds for gatewayClients = ['app-a'] (its templates filled in).
    entries = variable("main.bicep", "gatewayClientEntries")
    item = entries["loop_type"]["detail"]["item_name"]
    example_client = {
        "name": "app-a",
        "key_secrets": [name.replace(f"${{{item}}}", "app-a") for name in entries["config"]["key_secrets"]],
    }
    assert example_client["key_secrets"] == ["gateway-key-app-a", "gateway-key-app-a-next"]
    host_keys = unwrap(variable("app/gateway-config-group.bicep", "hosts"))
    client_keys = unwrap(variable("app/gateway-config.bicep", "clientEntries"))
    document = {
        "deployments": {"gpt-4o": [{name: example_host[name] for name in host_keys}]},
        "clients": [{name: example_client[name] for name in client_keys}],
    }
    env = {
        "GATEWAY_CONFIG": json.dumps(document),
        "GATEWAY_KEYVAULT_URI": "https://kv-example.vault.azure.net/",
        "GATEWAY_CREDENTIAL": "managed-identity",
    }
    settings = config.load_settings(env)
    assert [host.name for host in settings.cluster.all_hosts()] == ["eastus"]
    assert [client.name for client in settings.clients] == ["app-a"]
    # No key from app settings: both keys come from Key Vault, re-read while the app runs.
    assert settings.clients[0].keys == ()
    assert settings.clients[0].key_secrets == ("gateway-key-app-a", "gateway-key-app-a-next")
    assert not settings.warnings


# --------------------------------------------------------------------------------------------------
# Keyless access
# --------------------------------------------------------------------------------------------------


def test_every_openai_resource_gets_openai_user_via_a_loop() -> None:
    access = module("main.bicep", "openAiAccess")
    assert access["detail"]["path"] == "app/openai-rbac.bicep"
    loop = access["config"]["loop_type"]
    assert loop["detail"]["array_name"] == "openAiResourceIds"
    assert access["config"]["condition"] is None
    item = loop["detail"]["item_name"]
    body = access["config"]["config"]
    # Deployed at the OpenAI resource's own resource group, in its own subscription.
    scope = function(body["scope"], "resource_group")["parameters"]

    def segment(expr: Any) -> tuple[str, int]:
        call = function(expr, "split")
        assert call["parameters"] == {"input_string": item, "delimiter": "/"}
        return item, call["index"]

    assert segment(scope["subscription_id"]) == (item, 2)
    assert segment(scope["resource_group_name"]) == (item, 4)
    assert segment(body["params"]["accountName"]) == (item, 8)
    assert render(body["params"]["functionPrincipalId"]) == "identity.outputs.apiPrincipalId"
    assert body["params"]["spnObjectId"] == "spnObjectId"

    # The module assigns "Cognitive Services OpenAI User" on the account to the identity and the SPN.
    assert variable("app/openai-rbac.bicep", "openAiUserRoleId") == OPENAI_USER_ROLE_ID
    account = tree("app/openai-rbac.bicep")["resources"]["account"]
    assert account["type"] == "Microsoft.CognitiveServices/accounts"
    assert account["existing"] is True
    assert account["config"]["name"] == "accountName"
    roles = resources("app/openai-rbac.bicep", "Microsoft.Authorization/roleAssignments")
    principals = set()
    for role in roles.values():
        assert role["scope"] == "account"
        definition = function(role["properties"]["roleDefinitionId"], "subscription_resource_id")
        assert definition["parameters"]["resource_name_1"] == "openAiUserRoleId"
        principals.add(role["properties"]["principalId"])
    assert principals == {"functionPrincipalId", "spnObjectId"}
    spn_condition = tree("app/openai-rbac.bicep")["resources"]["spnOpenAiUser"]["config"]["condition"]
    assert "spnObjectId" in json.dumps(spn_condition)


def test_demo_accounts_are_keyless_and_get_the_same_roles() -> None:
    demo = module("main.bicep", "demoOpenAi")
    assert demo["config"]["loop_type"]["detail"]["array_name"] == "demoRegions"
    assert tree("main.bicep")["parameters"]["demoRegions"]["default"] == []
    account = the_resource("app/openai-demo.bicep", "Microsoft.CognitiveServices/accounts")
    assert account["kind"] == "OpenAI"
    assert account["properties"]["disableLocalAuth"] is True
    assert account["properties"]["customSubDomainName"] == "name"
    assert resources("app/openai-demo.bicep", "Microsoft.CognitiveServices/accounts/deployments")
    rbac = module("app/openai-demo.bicep", "rbac")
    assert rbac["detail"]["path"] == "openai-rbac.bicep"
    assert render(rbac["config"]["params"]["accountName"]) == "account.name"


def test_no_keys_or_key_based_connection_strings_anywhere_in_infra() -> None:
    forbidden = re.compile(
        r"\blist\w*\s*\(|AccountKey=|SharedAccessKey=|InstrumentationKey=|primaryKey|secondaryKey"
        r"|AzureWebJobsStorage['\"]?\s*:|WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
        re.IGNORECASE,
    )
    offenders = []
    for path in sorted(INFRA.rglob("*")):
        if path.suffix in {".bicep", ".json"}:
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                if forbidden.search(line):
                    offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, "key material or key-based access:\n" + "\n".join(offenders)


def test_storage_is_entra_only() -> None:
    account = the_resource("app/storage.bicep", "Microsoft.Storage/storageAccounts")["properties"]
    assert account["allowSharedKeyAccess"] is False
    assert account["minimumTlsVersion"] == "TLS1_2"
    assert account["allowBlobPublicAccess"] is False
    assert account["supportsHttpsTrafficOnly"] is True
    assert resources("app/storage.bicep", "Microsoft.Storage/storageAccounts/blobServices/containers")
    assert resources("app/storage.bicep", "Microsoft.Storage/storageAccounts/tableServices")
    assignments = tree("app/storage.bicep")["resources"]["functionRoleAssignments"]["config"]
    loop = assignments["loop_type"]["detail"]
    role_table = variable("app/storage.bicep", "roles")
    role_ids = set()
    for reference in variable("app/storage.bicep", loop["array_name"]):
        table, name = str(render(reference)).split(".")
        assert table == "roles"
        role_ids.add(role_table[name])
    assert role_ids == STORAGE_ROLE_IDS
    properties = assignments["config"]["properties"]
    assert properties["principalId"] == "functionPrincipalId"
    definition = function(properties["roleDefinitionId"], "subscription_resource_id")["parameters"]
    assert definition["resource_name_1"] == loop["item_name"]


def test_key_vault_is_rbac_only_with_soft_delete_and_purge_protection() -> None:
    vault = the_resource("app/keyvault.bicep", "Microsoft.KeyVault/vaults")["properties"]
    assert vault["enableRbacAuthorization"] is True
    assert vault["enableSoftDelete"] is True
    assert vault["enablePurgeProtection"] is True
    assert "accessPolicies" not in vault
    role = resources("app/keyvault.bicep", "Microsoft.Authorization/roleAssignments")["functionSecretsUser"]
    assert role["properties"]["principalId"] == "functionPrincipalId"
    assert role["scope"] == "vault"


# --------------------------------------------------------------------------------------------------
# Parameters and outputs
# --------------------------------------------------------------------------------------------------


def test_outputs_are_upper_snake_and_complete() -> None:
    outputs = tree("main.bicep")["outputs"]
    assert set(outputs) >= REQUIRED_OUTPUTS
    bad = [name for name in outputs if not re.fullmatch(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)*", name)]
    assert not bad, f"outputs not in UPPER_SNAKE: {bad}"


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_every_param_has_a_description(path: Path) -> None:
    params = tree(path.relative_to(INFRA).as_posix()).get("parameters", {})
    missing = [name for name, decl in params.items() if not description(decl)]
    assert not missing, f"{path.name}: params without @description: {missing}"


def _azd_substitute(text: str) -> str:
    """Replace azd's ${NAME} / ${NAME=default} with the default (empty without one)."""
    return re.sub(r"\$\{[A-Z0-9_]+(?:=([^}]*))?\}", lambda m: m.group(1) or "", text)


def test_parameters_file_maps_azd_environment_values() -> None:
    raw = (INFRA / "main.parameters.json").read_text()
    mapped = json.loads(_azd_substitute(raw))["parameters"]
    main_params = tree("main.bicep")["parameters"]
    assert set(mapped) <= set(main_params), f"unknown parameters: {set(mapped) - set(main_params)}"
    required = {name for name, decl in main_params.items() if decl.get("default") is None}
    assert required <= set(mapped)
    for name, env in {
        "environmentName": "AZURE_ENV_NAME",
        "location": "AZURE_LOCATION",
        "principalId": "AZURE_PRINCIPAL_ID",
    }.items():
        assert f'"{name}": {{\n      "value": "${{{env}}}"' in raw
    for name in ("openAiResourceIds", "gatewayBackends", "gatewayClients", "demoRegions", "spnObjectId", "spnClientId"):
        assert name in mapped, f"{name} is not mapped to an azd environment value"
    for name, decl in main_params.items():
        if name in mapped and decl["type"] == "array":
            assert isinstance(mapped[name]["value"], list), f"{name}: arrays must be substituted unquoted"


def test_azure_yaml_declares_one_python_function_service() -> None:
    yaml = pytest.importorskip("yaml")
    document = yaml.safe_load((REPO / "azure.yaml").read_text())
    assert document["services"] == {"api": {"project": ".", "language": "python", "host": "function"}}
    # The azd-service-name tag ties the service to the Function App.
    tags = function(_site()["tags"], "union")["parameters"]["arg_2"]
    assert {key(k): v for k, v in tags.items()}["azd-service-name"] in document["services"]


# --------------------------------------------------------------------------------------------------
# checkov
# --------------------------------------------------------------------------------------------------


def checkov_problems(report: dict[str, Any]) -> list[str]:
    """Everything in a checkov JSON report that must fail the build."""
    problems = []
    summary = report.get("summary", {})
    results = report.get("results", {})
    parse_errors = list(results.get("parsing_errors") or [])
    if summary.get("parsing_errors") or parse_errors:
        problems.append(f"parse errors: {parse_errors or summary.get('parsing_errors')}")
    for check in results.get("failed_checks") or []:
        problems.append(f"FAILED {check['check_id']} {check['resource']} ({check['file_path']}): {check['check_name']}")
    for check in results.get("skipped_checks") or []:
        reason = (check.get("check_result") or {}).get("suppress_comment", "")
        if not reason or reason == "No comment provided":
            problems.append(f"waiver without a reason: {check['check_id']} {check['resource']}")
    if not summary.get("passed"):
        problems.append("checkov passed no check at all: did it scan anything?")
    return problems


def test_checkov_problems_detects_parse_errors_failures_and_bare_waivers() -> None:
    clean = {"summary": {"passed": 3, "failed": 0, "parsing_errors": 0}, "results": {}}
    assert checkov_problems(clean) == []
    broken = {
        "summary": {"passed": 3, "failed": 1, "parsing_errors": 1},
        "results": {
            "parsing_errors": ["/infra/app/x.bicep"],
            "failed_checks": [{"check_id": "CKV_AZURE_1", "resource": "r", "file_path": "/x", "check_name": "n"}],
            "skipped_checks": [
                {
                    "check_id": "CKV_AZURE_2",
                    "resource": "r",
                    "check_result": {"suppress_comment": "No comment provided"},
                }
            ],
        },
    }
    assert len(checkov_problems(broken)) == 3


def _checkov_executable() -> str:
    beside_python = Path(sys.executable).with_name("checkov")
    found = str(beside_python) if beside_python.exists() else shutil.which("checkov")
    if not found:
        pytest.fail("checkov is not installed: pip install -r requirements-dev.txt")
    return found


@pytest.fixture(scope="module")
def checkov_report() -> dict[str, Any]:
    """One checkov scan of infra/ per test session (its first parse takes a while)."""
    env = dict(os.environ, BC_SKIP_MAPPING="TRUE", CKV_PARSE_ERROR_FAIL="true", LOG_LEVEL="WARNING")
    command = [
        _checkov_executable(),
        "--directory",
        str(INFRA),
        "--framework",
        "bicep",
        "--skip-download",
        "--compact",
        "--output",
        "json",
    ]
    completed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=False)
    try:
        report = json.loads(completed.stdout)
    except json.JSONDecodeError:
        output = f"{completed.stdout[-2000:]}\n{completed.stderr[-2000:]}"
        pytest.fail(f"checkov printed no JSON (exit {completed.returncode}):\n{output}")
    if isinstance(report, list):  # one report per framework; only bicep was asked for
        (report,) = report
    report["exit_code"] = completed.returncode
    return cast(dict[str, Any], report)


def test_checkov_passes_without_parse_errors(checkov_report: dict[str, Any]) -> None:
    problems = checkov_problems(checkov_report)
    assert not problems, "checkov:\n" + "\n".join(problems)
    assert checkov_report["exit_code"] == 0


def test_checkov_waivers_sit_inside_the_resource_they_waive(checkov_report: dict[str, Any]) -> None:
    for check in checkov_report["results"].get("skipped_checks") or []:
        path = INFRA / check["file_path"].lstrip("/")
        first, last = check["file_line_range"]
        body = path.read_text().splitlines()[first - 1 : last]
        assert any(f"checkov:skip={check['check_id']}:" in line for line in body), (
            f"{check['check_id']} is not waived inside {check['resource']} ({path.name}:{first}-{last})"
        )
