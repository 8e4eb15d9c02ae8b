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
from pathlib import Path
from typing import Any, cast

import pytest

from infra.hooks.azd_hooks import parameters as azd_parameters
from tests.infra.bicep import (
    BICEP_FILES,
    INFRA,
    REPO,
    description,
    evaluate,
    function,
    key,
    module,
    render,
    resources,
    scope,
    the_resource,
    tree,
    unwrap,
    variable,
    walk,
)
from tests.infra.schemas import EXTRACT, resource_bodies, resource_problems

OPENAI_USER_ROLE_ID = "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd"
KEY_VAULT_SECRETS_USER_ROLE_ID = "4633458b-17de-408a-b874-0445c86b69e6"
KEY_VAULT_SECRETS_OFFICER_ROLE_ID = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"
KEY_VAULT_CERTIFICATES_OFFICER_ROLE_ID = "a4417e6f-fecd-4de8-b567-7b0420556985"
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
    "AZURE_TLS_KEY_VAULT_NAME",
    "AZURE_STORAGE_ACCOUNT_NAME",
    "AZURE_MANAGED_IDENTITY_CLIENT_ID",
    "APPLICATIONINSIGHTS_NAME",
}
# Every host has these in GATEWAY_CONFIG; rpm and probe only when the backend gives them.
GATEWAY_HOST_KEYS = {"name", "endpoint", "deployment", "tpm", "priority", "weight", "auth"}
OPTIONAL_HOST_KEYS = {"rpm", "probe"}
DEMO_BACKEND_KEYS = {"name", "endpoint", "deployment", "logical", "tpm", "priority", "weight"}
FLEX = json.loads((Path(__file__).parent / "data" / "flex-consumption.json").read_text())


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
        "app/observability.bicep",
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


def _main_names(**params: Any) -> dict[str, Any]:
    """main.bicep's names for given parameter values, with the module outputs the tests look at stubbed."""
    names = scope("main.bicep", params)
    names["abbrs.keyVault"] = json.loads((INFRA / "abbreviations.json").read_text())["keyVault"]
    names["resourceToken"] = "abcdefghijklm"  # uniqueString() is 13 characters
    names["appGateway.outputs.fqdn"] = "aoai-gateway-x.swedencentral.cloudapp.azure.com"
    names["tlsKeyVault.outputs.uri"] = "https://kv-tls-x.vault.azure.net/"
    return names


def _gateway_for(**params: Any) -> dict[str, Any]:
    """The Application Gateway's listener setup that main.bicep asks for with these parameters."""
    names = _main_names(**params)
    wiring = module("main.bicep", "appGateway")["config"]["params"]
    module_params = {name: evaluate(wiring[name], names) for name in ("certificateSecretId", "serveHttp")}
    inside = scope("app/appgateway.bicep", {**module_params, "gatewayId": "/gateway"})  # resourceId() stubbed
    gateway = _gateway()
    ports = [item["properties"]["port"] for item in evaluate(gateway["frontendPorts"], inside)]
    listeners = [item["properties"]["protocol"] for item in evaluate(gateway["httpListeners"], inside)]
    rules = evaluate(gateway["requestRoutingRules"], inside)
    network = module("main.bicep", "network")["config"]["params"]
    return {
        "ports": sorted(ports),
        "listeners": sorted(listeners),
        "forward_from": rules[0]["properties"]["httpListener"]["id"].rsplit("/", 1)[1],
        "redirects": [rule["name"] for rule in rules if "redirectConfiguration" in rule["properties"]],
        "nsg_ports": evaluate(network["clientPorts"], names),
        "certificate": module_params["certificateSecretId"],
        "url": evaluate(tree("main.bicep")["outputs"]["GATEWAY_URL"]["value"], names),
    }


def test_without_a_certificate_http_is_the_only_listener() -> None:
    gateway = _gateway_for()
    assert gateway["listeners"] == ["Http"] and gateway["ports"] == [80] == [int(p) for p in gateway["nsg_ports"]]
    assert gateway["redirects"] == [] and gateway["certificate"] == ""
    assert gateway["url"] == "http://aoai-gateway-x.swedencentral.cloudapp.azure.com"
    # allowHttp changes nothing without a certificate: port 80 is the only way in.
    assert _gateway_for(appGatewayAllowHttp=True)["listeners"] == ["Http"]


def test_with_a_certificate_https_only_unless_http_is_allowed() -> None:
    gateway = _gateway_for(appGatewayCertificateName="gateway-tls", appGatewayHostName="gateway.contoso.com")
    assert gateway["listeners"] == ["Https"] and gateway["ports"] == [443]
    assert gateway["nsg_ports"] == ["443"], "port 80 must be closed in the NSG too"
    assert gateway["forward_from"] == "https-listener" and gateway["redirects"] == []
    # Versionless id in the TLS vault, so renewals are picked up; the URL is the certificate's host name.
    assert gateway["certificate"] == "https://kv-tls-x.vault.azure.net/secrets/gateway-tls"
    assert gateway["url"] == "https://gateway.contoso.com"

    allowed = _gateway_for(appGatewayCertificateName="gateway-tls", appGatewayAllowHttp=True)
    assert allowed["listeners"] == ["Http", "Https"] and allowed["ports"] == [80, 443]
    assert sorted(allowed["nsg_ports"]) == ["443", "80"]
    assert allowed["forward_from"] == "https-listener" and allowed["redirects"] == ["http-to-https"]
    assert allowed["url"] == "https://aoai-gateway-x.swedencentral.cloudapp.azure.com"
    redirect = _gateway()["redirectConfigurations"]["operator"]["operands"]["true_value"][0]["properties"]
    assert redirect["redirectType"] == "Temporary"  # 307 keeps POST bodies
    assert tree("main.bicep")["parameters"]["appGatewayAllowHttp"]["default"] is False


def test_the_gateway_reads_its_certificate_from_its_own_vault_with_a_role_granted_beforehand() -> None:
    certificates = _gateway()["sslCertificates"]["operator"]["operands"]["true_value"]
    assert certificates[0]["properties"]["keyVaultSecretId"] == "certificateSecretId"
    tls = module("main.bicep", "tlsKeyVault")
    assert tls["detail"]["path"] == "app/keyvault.bicep"
    assert tls["config"].get("condition") is None, "the TLS vault and its role must exist before any certificate"
    assert render(tls["config"]["params"]["readerPrincipalId"]) == "identity.outputs.gatewayPrincipalId"
    assert tls["config"]["params"]["principalRole"] == "certificates"
    role = resources("app/keyvault.bicep", "Microsoft.Authorization/roleAssignments")["readerSecretsUser"]
    assert tree("app/keyvault.bicep")["resources"]["readerSecretsUser"]["config"].get("condition") is None
    assert role["scope"] == "vault" and role["properties"]["principalId"] == "readerPrincipalId"
    assert variable("app/keyvault.bicep", "secretsUserRoleId") == KEY_VAULT_SECRETS_USER_ROLE_ID
    # The gateway identity is the TLS vault's reader, and nothing grants it the gateway vault.
    gateway_vault = module("main.bicep", "keyVault")["config"]["params"]
    assert render(gateway_vault["readerPrincipalId"]) == "identity.outputs.apiPrincipalId"
    granted_to_gateway = [
        name
        for name, decl in tree("main.bicep")["modules"].items()
        if any(render(value) == "identity.outputs.gatewayPrincipalId" for value in walk(decl["config"]))
    ]
    assert granted_to_gateway == ["tlsKeyVault"]


def test_waf_defaults_to_detection_owasp_32_with_body_inspection() -> None:
    policy = the_resource("app/appgateway.bicep", "Microsoft.Network/ApplicationGatewayWebApplicationFirewallPolicies")[
        "properties"
    ]
    assert policy["managedRules"]["managedRuleSets"] == [{"ruleSetType": "OWASP", "ruleSetVersion": "3.2"}]
    settings = policy["policySettings"]
    assert settings["mode"] == "wafMode"
    assert tree("app/appgateway.bicep")["parameters"]["wafMode"]["default"] == "Detection"
    assert tree("main.bicep")["parameters"]["appGatewayWafMode"]["default"] == "Detection"
    assert azd_parameters({})["appGatewayWafMode"] == "Detection"
    assert azd_parameters({"APP_GATEWAY_WAF_MODE": "Prevention"})["appGatewayWafMode"] == "Prevention"
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


def test_the_flex_site_sets_nothing_flex_consumption_rejects() -> None:
    """Learn's Flex Consumption deprecations: ftpsState & co. fail the deployment, the old settings do nothing."""
    site = _site()
    site_config = site["properties"]["siteConfig"]
    deprecated_properties = {name.lower() for name in FLEX["deprecatedSiteProperties"]}
    assert "ftpsstate" in deprecated_properties  # the extract is the one the deployment logs point at
    used = {key(name).lower() for name in site_config} | {key(name).lower() for name in site["properties"]}
    assert not used & deprecated_properties, f"Flex Consumption rejects: {sorted(used & deprecated_properties)}"
    settings = set(_settings_set_by_function_module())
    assert not settings & set(FLEX["deprecatedAppSettings"]), f"deprecated on Flex: {settings}"
    # What they configured lives in functionAppConfig instead, and FTP is off through the credentials policy.
    assert {"deployment", "scaleAndConcurrency", "runtime"} <= set(site["properties"]["functionAppConfig"])
    policies = resources("app/function.bicep", "Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert {p["name"]: p["properties"]["allow"] for p in policies.values()} == {"ftp": False, "scm": False}


def test_the_gateway_runs_in_a_region_that_offers_flex_consumption() -> None:
    location = tree("main.bicep")["parameters"]["location"]
    allowed = next(d["argument"] for d in location["decorators"] if d["type"] == "allowed")
    assert allowed, "location must be limited to Flex Consumption regions"
    assert set(allowed) <= set(FLEX["regions"]), f"not Flex Consumption regions: {set(allowed) - set(FLEX['regions'])}"
    # Canary regions are for Microsoft's own early access.
    assert not [region for region in allowed if region.endswith("euap")]
    metadata = next(d["argument"] for d in location["decorators"] if d["type"] == "metadata")
    assert metadata == {"azd": {"type": "location"}}  # azd offers only these when it asks


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
    """Setting name -> value expression. siteConfig.appSettings is a list of {name, value}, or concat() of such
    lists and filter()s of such lists (settings set only when their value is not empty)."""
    site_config = _site()["properties"]["siteConfig"]
    literal: dict[str, Any] = {}

    def collect(expr: Any) -> None:
        if isinstance(expr, str):
            collect(variable("app/function.bicep", expr))
        elif isinstance(expr, dict) and "function" in expr and expr["function"]["type"] == "filter":
            collect(expr["function"]["parameters"]["input_array"])
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


def _optional_settings() -> set[str]:
    """The settings function.bicep sets only when their value is not empty."""
    call = function(variable("app/function.bicep", "appSettings"), "concat")["parameters"]["arg_2"]
    filtered = function(call, "filter")["parameters"]
    assert filtered["input_array"] == "optionalSettings"
    assert "setting.value" in json.dumps(filtered) and "empty" in json.dumps(filtered)
    return {setting["name"] for setting in variable("app/function.bicep", "optionalSettings")}


def test_every_app_setting_the_code_reads_is_set_and_nothing_else() -> None:
    manifest = app_settings_manifest()
    assert not [name for name in manifest if "*" in name], "app-settings.txt lists a per-client wildcard setting"
    assert set(_settings_set_by_function_module()) == manifest


def test_gateway_keys_are_key_vault_secrets_the_code_reads_with_the_uami() -> None:
    # gateway-config.bicep: every client of gatewayClients, passed through, with key_secrets derived from its name.
    assert module("main.bicep", "gatewayConfig")["config"]["params"]["clients"] == "gatewayClients"
    entries = variable("app/gateway-config.bicep", "clientEntries")
    loop = entries["loop_type"]["detail"]
    assert loop["array_name"] == "clients"
    item = loop["item_name"]
    merged = function(entries["config"], "union")["parameters"]
    assert merged["arg_1"] == item, "every client field passes through"
    assert merged["arg_2"] == {
        "key_secrets": [f"gateway-key-${{{item}.name}}", f"gateway-key-${{{item}.name}}-next"],
    }
    assert tree("app/gateway-config.bicep")["outputs"]["clients"]["value"] == "clientEntries"
    # ... and the code reads them from the vault named by GATEWAY_KEYVAULT_URI ...
    settings = _settings_set_by_function_module()
    assert render(settings["GATEWAY_KEYVAULT_URI"]) == "vault.properties.vaultUri"
    vault = tree("app/function.bicep")["resources"]["vault"]
    assert vault["existing"] is True and vault["config"]["name"] == "keyVaultName"
    function_params = module("main.bicep", "functionApp")["config"]["params"]
    assert render(function_params["keyVaultName"]) == "keyVault.outputs.name"
    # ... with the Function's identity, which holds Key Vault Secrets User on that vault (and on no other).
    assert render(function_params["identityId"]) == "identity.outputs.apiIdentityId"
    assert settings["AZURE_CLIENT_ID"] == "identityClientId"
    assert render(function_params["identityClientId"]) == "identity.outputs.apiClientId"
    vault_params = module("main.bicep", "keyVault")["config"]["params"]
    assert render(vault_params["readerPrincipalId"]) == "identity.outputs.apiPrincipalId"
    assert vault_params["principalRole"] == "secrets"
    granted_to_function = [
        name
        for name, decl in tree("main.bicep")["modules"].items()
        if decl["detail"]["path"] == "app/keyvault.bicep"
        and any(render(value) == "identity.outputs.apiPrincipalId" for value in walk(decl["config"]))
    ]
    assert granted_to_function == ["keyVault"]


def test_each_vault_has_one_reader_and_the_deployer_gets_the_officer_role_it_needs() -> None:
    roles = resources("app/keyvault.bicep", "Microsoft.Authorization/roleAssignments")
    assert sorted(roles) == ["principalOfficer", "readerSecretsUser"]
    officer = roles["principalOfficer"]
    assert officer["scope"] == "vault" and officer["properties"]["principalId"] == "principalId"
    definition = function(officer["properties"]["roleDefinitionId"], "subscription_resource_id")["parameters"]
    assert definition["resource_name_1"] == "officerRoleId"
    officer_roles = variable("app/keyvault.bicep", "officerRoleIds")
    assert render(variable("app/keyvault.bicep", "officerRoleId")) == "officerRoleIds[principalRole]"
    # `az keyvault secret set` needs Secrets Officer; `az keyvault certificate import` needs Certificates Officer.
    assert officer_roles == {
        "secrets": KEY_VAULT_SECRETS_OFFICER_ROLE_ID,
        "certificates": KEY_VAULT_CERTIFICATES_OFFICER_ROLE_ID,
    }
    vaults = {
        name: decl["config"]["params"]
        for name, decl in tree("main.bicep")["modules"].items()
        if decl["detail"]["path"] == "app/keyvault.bicep"
    }
    assert {name: params["principalRole"] for name, params in vaults.items()} == {
        "keyVault": "secrets",
        "tlsKeyVault": "certificates",
    }
    assert all(params["principalId"] == "principalId" for params in vaults.values())


def test_key_vault_names_are_salted_and_fit() -> None:
    """Purge protection reserves a deleted vault's name: a deployment after `azd down` needs other names."""
    salt = tree("main.bicep")["parameters"]["keyVaultSalt"]
    assert salt["default"] == "" and {"type": "max_length", "argument": 4} in salt["decorators"]
    names = _main_names(keyVaultSalt="0a1b")
    for vault in ("keyVault", "tlsKeyVault"):
        name = evaluate(module("main.bicep", vault)["config"]["params"]["name"], names)
        assert name.endswith("0a1b") and len(name) <= 24, name
    assert azd_parameters({"AZURE_KEY_VAULT_SALT": "0a1b"})["keyVaultSalt"] == "0a1b"


def test_no_app_setting_is_a_key_vault_reference() -> None:
    """Client keys are no longer GATEWAY_KEY_* = @Microsoft.KeyVault(...) settings, which only a restart refreshes."""
    settings = _settings_set_by_function_module()
    assert not [name for name in settings if name.startswith("GATEWAY_KEY_") and name != "GATEWAY_KEY_REFRESH_SECONDS"]
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
    assert "gatewayClients" not in tree("app/function.bicep").get("parameters", {})
    assert "gatewayClients" not in module("main.bicep", "functionApp")["config"]["params"]


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
    assert params["clients"] == "gatewayClients"
    # Demo accounts join the configuration like a backend without rpm (the gateway derives it from the TPM).
    assert set(unwrap(variable("main.bicep", "demoBackends"))) == DEMO_BACKEND_KEYS

    # GATEWAY_CONFIG = string(union({deployments: json('{<entries>}'), clients, routing}, {entra_default_client}?))
    function_params = main_modules["functionApp"]["config"]["params"]
    assert function_params["gatewayConfigJson"] == "gatewayConfigJson"
    value = function(variable("main.bicep", "gatewayConfigJson"), "string")["parameters"]["value_to_convert"]
    assert value == "gatewayConfigDocument"
    parts = function(variable("main.bicep", "gatewayConfigDocument"), "union")["parameters"]
    document = parts["arg_1"]
    assert set(document) == {"deployments", "clients", "routing"}
    deployments = function(document["deployments"], "json")["parameters"]["arg_1"]
    assert deployments == "{${join(gatewayConfig.outputs.deploymentEntries, ', ')}}"
    assert render(document["clients"]) == "gatewayConfig.outputs.clients"
    assert document["routing"] == "gatewayRouting", "routing passes through whole: new fields need no template change"
    assert tree("main.bicep")["parameters"]["gatewayRouting"]["default"] == {}
    names = _main_names()
    assert evaluate(parts["arg_2"], names) == {}
    names = _main_names(gatewayEntraDefaultClient="app-a")
    assert evaluate(parts["arg_2"], names) == {"entra_default_client": "app-a"}

    config_outputs = tree("app/gateway-config.bicep")["outputs"]
    assert config_outputs["clients"]["value"] == "clientEntries"
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
    required = unwrap(variable("app/gateway-config-group.bicep", "requiredFields"))
    assert set(required) == GATEWAY_HOST_KEYS
    assert {"type": "entra"} in list(walk(required["auth"]))  # default auth when a backend has none


def _gateway_config_hosts(backends: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The hosts gateway-config-group.bicep emits for these backends (one logical deployment).

    pycep nests `backend.?priority ?? 1` as backend.(priority ?? 1), so the required fields are read by their shape:
    backend.<field>, or backend.<field> with a default."""
    required = unwrap(variable("app/gateway-config-group.bicep", "requiredFields"))
    hosts_expr = variable("app/gateway-config-group.bicep", "hosts")
    loop = hosts_expr["loop_type"]["detail"]
    assert (loop["array_name"], loop["index_name"]) == ("matching", "i")

    def field(expr: Any, backend: dict[str, Any]) -> Any:
        accessed = expr["operator"]["operands"]["operand_2"]
        if isinstance(accessed, str):
            return backend[accessed]
        default = accessed["operator"]["operands"]
        assert accessed["operator"]["type"] == "coalesce"
        return backend.get(default["operand_1"], default["operand_2"])

    fields = [{name: field(expr, backend) for name, expr in required.items()} for backend in backends]
    return [
        evaluate(hosts_expr["config"], {"requiredFields": fields, "i": index, loop["item_name"]: backend})
        for index, backend in enumerate(backends)
    ]


def _gateway_config_clients(clients: list[dict[str, Any]]) -> list[dict[str, Any]]:
    entries = variable("app/gateway-config.bicep", "clientEntries")
    item = entries["loop_type"]["detail"]["item_name"]
    return [evaluate(entries["config"], {item: client, f"{item}.name": client["name"]}) for client in clients]


def test_optional_host_and_client_fields_appear_only_when_given() -> None:
    full = {
        "name": "eastus",
        "endpoint": "https://aoai-eastus.openai.azure.com",
        "deployment": "gpt-4o",
        "logical": "gpt-4o",
        "tpm": 240000,
        "rpm": 1000,
        "priority": 2,
        "weight": 3,
        "auth": {"type": "api-key", "setting": "EASTUS_KEY"},
        "probe": {"path": "/openai/models", "api_version": "2024-10-21"},
    }
    minimal = {name: full[name] for name in ("name", "endpoint", "deployment", "logical", "tpm")}
    with_all, with_least = _gateway_config_hosts([full, minimal])
    assert with_all == {name: full[name] for name in GATEWAY_HOST_KEYS | OPTIONAL_HOST_KEYS}
    # No rpm (the gateway derives 6 per 1,000 TPM), no probe (the default one), the documented defaults.
    expected = {name: value for name, value in minimal.items() if name != "logical"}
    assert with_least == {**expected, "priority": 1, "weight": 1, "auth": {"type": "entra"}}
    (client,) = _gateway_config_clients([{"name": "app-a", "limits": {"tpm": 20000}, "priority": "low"}])
    assert client == {
        "name": "app-a",
        "limits": {"tpm": 20000},
        "priority": "low",
        "key_secrets": ["gateway-key-app-a", "gateway-key-app-a-next"],
    }


def test_generated_config_shape_is_accepted_by_the_gateway_config_loader() -> None:
    """What the Bicep emits (evaluated from the parse trees) is a document shared/config.py accepts."""
    config = pytest.importorskip("shared.config")
    hosts = _gateway_config_hosts(
        [
            {
                "name": "eastus",
                "endpoint": "https://aoai-eastus.openai.azure.com",
                "deployment": "gpt-4o",
                "logical": "gpt-4o",
                "tpm": 240000,
                "probe": {"path": "/openai/models", "api_version": "2024-10-21"},
            },
            {
                "name": "uksouth",
                "endpoint": "https://aoai-uksouth.openai.azure.com",
                "deployment": "gpt-4o-uk",
                "logical": "gpt-4o",
                "tpm": 150000,
                "rpm": 900,
                "priority": 2,
            },
        ]
    )
    clients = _gateway_config_clients(
        [
            {"name": "app-a", "limits": {"tpm": 20000, "rpm": 120, "tokens_per_day": 5000000}},
            {"name": "batch", "priority": "low", "entra_app_ids": ["11111111-2222-3333-4444-555555555555"]},
        ]
    )
    parts = function(variable("main.bicep", "gatewayConfigDocument"), "union")["parameters"]
    names = _main_names(gatewayRouting={"wait_budget_seconds": 3}, gatewayEntraDefaultClient="app-a")
    names["gatewayConfig.outputs.clients"] = clients
    document = {**evaluate({**parts["arg_1"], "deployments": {}}, names), **evaluate(parts["arg_2"], names)}
    document["deployments"] = {"gpt-4o": hosts}  # what json() of the joined group entries yields
    env = {
        "GATEWAY_CONFIG": json.dumps(document),
        "GATEWAY_KEYVAULT_URI": "https://kv-example.vault.azure.net/",
        "GATEWAY_CREDENTIAL": "managed-identity",
        "GATEWAY_ENTRA_TENANT_ID": "00000000-0000-0000-0000-000000000001",
        "GATEWAY_ENTRA_AUDIENCE": "api://aoai-gateway",
    }
    settings = config.load_settings(env)
    assert [host.name for host in settings.cluster.all_hosts()] == ["eastus", "uksouth"]
    east, uk = settings.cluster.all_hosts()
    assert (east.rpm, uk.rpm) == (240000 * 6 // 1000, 900)  # rpm optional: derived from the TPM
    assert [client.name for client in settings.clients] == ["app-a", "batch"]
    assert settings.routing.wait_budget_seconds == 3
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
    target = function(body["scope"], "resource_group")["parameters"]

    def segment(expr: Any) -> tuple[str, int]:
        call = function(expr, "split")
        assert call["parameters"] == {"input_string": item, "delimiter": "/"}
        return item, call["index"]

    assert segment(target["subscription_id"]) == (item, 2)
    assert segment(target["resource_group_name"]) == (item, 4)
    assert segment(body["params"]["accountName"]) == (item, 8)
    assert render(body["params"]["functionPrincipalId"]) == "identity.outputs.apiPrincipalId"
    assert body["params"]["spnObjectId"] == "spnObjectId"
    # The SPN's grant is opt-in per resource: the seed's SPN usually holds the role already (409 otherwise).
    grant = function(body["params"]["grantSpn"], "contains")["parameters"]
    assert grant == {"container": "spnRoleResourceIds", "item_to_find": item}
    assert tree("main.bicep")["parameters"]["spnRoleResourceIds"]["default"] == []

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
    for grant_spn, spn, created in ((True, "spn", True), (False, "spn", False), (True, "", False)):
        names = scope("app/openai-rbac.bicep", {"grantSpn": grant_spn, "spnObjectId": spn})
        assert evaluate(spn_condition, names) is created, (grant_spn, spn)


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
    # A new account has no earlier assignment that could conflict: the SPN (when given) is granted there.
    assert "grantSpn" not in rbac["config"]["params"]
    assert tree("app/openai-rbac.bicep")["parameters"]["grantSpn"]["default"] is True


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


def _parameter_environment() -> dict[str, str]:
    """Bicep parameter -> the azd environment value main.parameters.json maps to it."""
    raw = (INFRA / "main.parameters.json").read_text()
    return dict(re.findall(r'"(\w+)": \{\s*"value": "?\$\{([A-Z0-9_]+)', raw))


def test_parameters_file_maps_azd_environment_values() -> None:
    raw = (INFRA / "main.parameters.json").read_text()
    mapped = azd_parameters({})  # what azd passes with nothing set: the defaults (nulls left out)
    main_params = tree("main.bicep")["parameters"]
    assert set(_parameter_environment()) <= set(main_params), "unknown parameters in main.parameters.json"
    required = {name for name, decl in main_params.items() if decl.get("default") is None}
    assert required <= set(mapped)
    for name, env in {
        "environmentName": "AZURE_ENV_NAME",
        "location": "AZURE_LOCATION",
        "principalId": "AZURE_PRINCIPAL_ID",
    }.items():
        assert f'"{name}": {{\n      "value": "${{{env}}}"' in raw
    for name, decl in main_params.items():
        if name in mapped and decl["type"] in ("array", "object"):
            assert isinstance(mapped[name], list | dict), f"{name}: JSON values must be substituted unquoted"
    # An object parameter defaults to null, so azd leaves it out and the template default applies: a default
    # of {} would end the ${...} early (azd's envsubst stops at the first '}').
    assert "gatewayRouting" not in mapped
    assert azd_parameters({"GATEWAY_ROUTING": '{"wait_budget_seconds": 3}'})["gatewayRouting"] == {
        "wait_budget_seconds": 3
    }


def test_every_parameter_azd_can_set_is_documented_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("### Parameters") :]
    table = table[: table.index("\n\n", table.index("| --- |"))]
    rows: dict[str, str] = {}
    for line in table.splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        envs, params = re.findall(r"`([A-Z0-9_]+)`", cells[0]), re.findall(r"`([a-zA-Z0-9]+)`", cells[1])
        assert len(envs) == len(params), line
        rows.update(zip(params, envs, strict=True))
    assert rows == _parameter_environment(), "README Parameters table and main.parameters.json disagree"


def test_azure_yaml_declares_one_python_function_service_built_from_the_lock() -> None:
    yaml = pytest.importorskip("yaml")
    document = yaml.safe_load((REPO / "azure.yaml").read_text())
    assert document["services"] == {
        "api": {"project": ".", "language": "python", "host": "function", "remoteBuild": True}
    }
    # The azd-service-name tag ties the service to the Function App.
    tags = function(_site()["tags"], "union")["parameters"]["arg_2"]
    assert {key(k): v for k, v in tags.items()}["azd-service-name"] in document["services"]
    # Azure's remote build installs requirements.txt, which is the hashed lock (tests/test_lock.py).
    assert "--hash=sha256:" in (REPO / "requirements.txt").read_text()
    minimum = re.fullmatch(r">= (\d+)\.(\d+)\.(\d+)", document["requiredVersions"]["azd"])
    assert minimum and tuple(map(int, minimum.groups())) >= (1, 23, 5), "remoteBuild needs azd 1.23.5"


def test_azure_yaml_runs_the_hooks_on_every_platform() -> None:
    yaml = pytest.importorskip("yaml")
    hooks = yaml.safe_load((REPO / "azure.yaml").read_text())["hooks"]
    assert set(hooks) == {"preprovision", "postdown"}
    for name, hook in hooks.items():
        for platform, shell, python in (("posix", "sh", "python3"), ("windows", "pwsh", "python")):
            assert hook[platform]["shell"] == shell
            command = hook[platform]["run"].split()
            assert command[0] == python and command[2:] == [name], hook
            assert (REPO / command[1]).is_file()
            assert not hook[platform].get("continueOnError"), "a refused configuration must stop azd"


def test_every_resource_matches_the_published_schema() -> None:
    """Property names and read-only flags against Azure/bicep-types-az for the API versions in use."""
    found = list(resource_bodies())
    assert len(found) >= 30 and {t for _, _, t, _ in found} <= set(json.loads(EXTRACT.read_text())["resources"])
    problems = [p for file, name, type_, body in found for p in resource_problems(type_, body, f"{file}:{name}")]
    assert not problems, "\n".join(problems)


def test_the_schema_check_catches_unknown_and_read_only_properties() -> None:
    rule = "Microsoft.Insights/scheduledQueryRules@2023-12-01"
    body = unwrap(tree("app/observability.bicep")["resources"]["alertRules"]["config"])
    assert resource_problems(rule, body, "rule") == []
    typo = {**body, "properties": {**body["properties"], "criterias": {}}}
    assert resource_problems(rule, typo, "rule") == [
        "rule.properties.criterias: no such property in the published schema"
    ]
    nested = {**body, "properties": {**body["properties"], "criteria": {"allOf": [{"querry": "x"}]}}}
    assert resource_problems(rule, nested, "rule") == [
        "rule.properties.criteria.allOf[0].querry: no such property in the published schema"
    ]
    read_only = {**body, "properties": {**body["properties"], "createdWithApiVersion": "2023-12-01"}}
    assert resource_problems(rule, read_only, "rule") == [
        "rule.properties.createdWithApiVersion: read-only in the published schema"
    ]
    assert resource_problems("Microsoft.Example/things@2030-01-01", {}, "x")[0].startswith("x: Microsoft.Example")


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
