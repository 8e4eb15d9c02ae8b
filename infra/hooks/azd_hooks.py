"""azd hooks (azure.yaml): `preprovision` checks the configuration and salts new vault names; `postdown` forgets them.

preprovision: azd runs it before every `azd provision` and `azd up`, with the environment's values in the process
environment. It resolves infra/main.parameters.json the way azd does and refuses, before anything is created, a
configuration that could not serve anyone or would fail at run time: the templates cannot check that themselves
(pycep-parser, which the offline validation relies on, knows no fail()). One line per problem and exit code 1
stop azd. A new deployment also gets the salt of its Key Vault names here.

postdown: `azd down` deletes the vaults, but purge protection keeps each name reserved for the soft-delete
retention (90 days by default), so the next deployment must not reuse them: the salt and the deleted vaults'
names are forgotten and the next preprovision salts afresh. To get the old secrets back instead, recover the vaults
(`az keyvault recover --name <vault>`) and set AZURE_KEY_VAULT_SALT to the old salt before `azd up`.

Standard library only: it runs on the deploying machine, outside the project's venv.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

PARAMETERS_FILE = Path(__file__).resolve().parent.parent / "main.parameters.json"
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:=([^}]*))?\}")
_RESOURCE_ID = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.CognitiveServices/accounts/([^/]+)$",
    re.IGNORECASE,
)
# Client names become Key Vault secret names gateway-key-<name>-next (letters, digits, dashes); the gateway
# takes at most 64 characters (shared/config.py).
_CLIENT_NAME = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_BACKEND_FIELDS = ("name", "endpoint", "deployment", "logical", "tpm")
SALT_SETTING = "AZURE_KEY_VAULT_SALT"
# What a deleted deployment leaves behind that the next one must not reuse.
FORGOTTEN_AFTER_DOWN = (SALT_SETTING, "AZURE_KEY_VAULT_NAME", "AZURE_TLS_KEY_VAULT_NAME")


def substitute(text: str, env: Mapping[str, str]) -> str:
    """azd's ${NAME} and ${NAME=default}: the value, or the default when it is unset or empty."""
    return _REFERENCE.sub(lambda match: env.get(match.group(1)) or match.group(2) or "", text)


def parameters(env: Mapping[str, str], text: str | None = None) -> dict[str, Any]:
    """The Bicep parameter values azd passes; a null value is left out (the template default applies)."""
    raw = PARAMETERS_FILE.read_text() if text is None else text
    try:
        document = json.loads(substitute(raw, env))
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"main.parameters.json is not valid JSON once the azd values are filled in ({exc.msg} at line "
            f"{exc.lineno}): a JSON-valued setting (GATEWAY_BACKENDS, GATEWAY_CLIENTS, GATEWAY_ROUTING, ...) "
            "holds something that is not JSON"
        ) from None
    return {name: entry["value"] for name, entry in document["parameters"].items() if entry["value"] is not None}


def _account(endpoint: str) -> str:
    """The account an endpoint belongs to: its custom subdomain, https://<account>.openai.azure.com."""
    host = urlparse(endpoint).hostname or ""
    return host.split(".", 1)[0].lower()


def _list(params: Mapping[str, Any], name: str, setting: str, found: list[str]) -> list[Any]:
    value = params.get(name, [])
    if isinstance(value, list):
        return value
    found.append(f"{setting}: must be a JSON array, got {json.dumps(value)}")
    return []


def problems(params: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """Everything that would make the deployment serve nobody, or fail at run time instead of now."""
    found: list[str] = []
    resource_ids = _list(params, "openAiResourceIds", "OPENAI_RESOURCE_IDS", found)
    backends = _list(params, "gatewayBackends", "GATEWAY_BACKENDS", found)
    clients = _list(params, "gatewayClients", "GATEWAY_CLIENTS", found)
    spn_resource_ids = _list(params, "spnRoleResourceIds", "GATEWAY_SPN_ROLE_RESOURCE_IDS", found)
    demo_regions = _list(params, "demoRegions", "DEMO_REGIONS", found)

    if not backends and not demo_regions:
        found.append(
            "GATEWAY_BACKENDS and DEMO_REGIONS are both empty: the gateway would have no Azure OpenAI deployment to "
            "send requests to. Set GATEWAY_BACKENDS to your deployments, or DEMO_REGIONS to create demo accounts."
        )
    entra_callers = bool(params.get("gatewayEntraTenantId")) and bool(params.get("gatewayEntraAudience"))
    if not clients and not entra_callers:
        found.append(
            "GATEWAY_CLIENTS is empty and Entra ID callers are off (GATEWAY_ENTRA_TENANT_ID and GATEWAY_ENTRA_AUDIENCE "
            'are not both set): nobody could call the gateway. Add a client (\'[{"name": "app-a"}]\') or set both.'
        )

    accounts = set()
    for index, resource_id in enumerate(resource_ids):
        match = _RESOURCE_ID.match(resource_id) if isinstance(resource_id, str) else None
        if match is None:
            found.append(
                f"OPENAI_RESOURCE_IDS[{index}]: {json.dumps(resource_id)} is not an Azure OpenAI resource id "
                "(/subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.CognitiveServices/accounts/<name>)"
            )
        else:
            accounts.add(match.group(1).lower())
    found += _backend_problems(backends, accounts)
    found += _client_problems(clients, params, entra_callers)

    for resource_id in spn_resource_ids:
        if resource_id not in resource_ids:
            found.append(
                f"GATEWAY_SPN_ROLE_RESOURCE_IDS: {resource_id} is not in OPENAI_RESOURCE_IDS (use the same string)"
            )
    if spn_resource_ids and not params.get("spnObjectId"):
        found.append("GATEWAY_SPN_ROLE_RESOURCE_IDS is set but GATEWAY_SPN_OBJECT_ID is not: nobody to grant the role")
    if not isinstance(params.get("gatewayRouting", {}), dict):
        found.append(f"GATEWAY_ROUTING: must be a JSON object, got {json.dumps(params['gatewayRouting'])}")
    if params.get("appGatewayCertificateName") and not env.get("AZURE_TLS_KEY_VAULT_NAME"):
        found.append(
            "APP_GATEWAY_CERTIFICATE_NAME is set, but this environment has no TLS vault yet: provision once without "
            "it, import the certificate into AZURE_TLS_KEY_VAULT_NAME, then set the name and provision again (the "
            "gateway's read permission must exist before it fetches the certificate)."
        )
    return found


def _backend_problems(backends: list[Any], accounts: set[str]) -> list[str]:
    found = []
    for index, backend in enumerate(backends):
        where = f"GATEWAY_BACKENDS[{index}]"
        if not isinstance(backend, dict):
            found.append(f"{where}: must be an object {{{', '.join(_BACKEND_FIELDS)}, ...}}")
            continue
        missing = [field for field in _BACKEND_FIELDS if field not in backend]
        if missing:
            found.append(f"{where}: missing {', '.join(missing)}")
            continue
        auth = backend.get("auth", {"type": "entra"})
        if not (isinstance(auth, dict) and auth.get("type", "entra") == "entra"):
            # An api-key host names the app setting holding its key; the templates set no secret as an app
            # setting (ARM replaces them all on every provision), so the gateway would not start.
            found.append(
                f'{where} ({backend["name"]}): only "auth": {{"type": "entra"}} backends can be deployed (an '
                "api-key backend's key would have to be an app setting, which the templates never hold). List the "
                "account in OPENAI_RESOURCE_IDS: the gateway's identity gets its role there."
            )
        elif _account(str(backend["endpoint"])) not in accounts:
            found.append(
                f"{where} ({backend['name']}): {backend['endpoint']} is not an account listed in "
                "OPENAI_RESOURCE_IDS, so the gateway's identity gets no role there and every request would "
                "fail with 401. Add the account's resource id to OPENAI_RESOURCE_IDS."
            )
    return found


def _client_problems(clients: list[Any], params: Mapping[str, Any], entra_callers: bool) -> list[str]:
    found = []
    names = []
    for index, client in enumerate(clients):
        where = f"GATEWAY_CLIENTS[{index}]"
        if not isinstance(client, dict) or not isinstance(client.get("name"), str):
            found.append(f'{where}: must be an object {{"name": ..., "limits"?: ..., ...}}, got {json.dumps(client)}')
        elif not _CLIENT_NAME.match(client["name"]):
            found.append(f"{where}: name {client['name']!r} must be 1-64 letters, digits or dashes")
        elif client["name"] in names:
            found.append(f"{where}: name {client['name']!r} is used twice")
        else:
            names.append(client["name"])
    default_client = params.get("gatewayEntraDefaultClient")
    if default_client and default_client not in names:
        found.append(f"GATEWAY_ENTRA_DEFAULT_CLIENT: {default_client!r} is not a client of GATEWAY_CLIENTS")
    if default_client and not entra_callers:
        found.append("GATEWAY_ENTRA_DEFAULT_CLIENT is set but Entra ID callers are off")
    return found


def new_salt(env: Mapping[str, str]) -> str | None:
    """A salt for a deployment that has no vault yet; None keeps the names an existing deployment has."""
    if env.get(SALT_SETTING) or env.get("AZURE_KEY_VAULT_NAME"):
        return None
    return secrets.token_hex(2)


def azd_env_set(name: str, value: str) -> None:
    """`azd env set` in the environment azd runs the hook for (`azd up -e <name>` need not be the default one)."""
    target = ["--environment", os.environ["AZURE_ENV_NAME"]] if os.environ.get("AZURE_ENV_NAME") else []
    subprocess.run(["azd", "env", "set", name, value, *target], check=True)


def preprovision(env: Mapping[str, str], set_value: Callable[[str, str], None]) -> int:
    try:
        found = problems(parameters(env), env)
    except ValueError as exc:
        found = [str(exc)]
    if found:
        print("azd provision stopped: this configuration could not serve requests.", file=sys.stderr)
        for problem in found:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    salt = new_salt(env)
    if salt is not None:
        set_value(SALT_SETTING, salt)
        print(f"{SALT_SETTING}={salt}: Key Vault names of this deployment end with it")
    return 0


def postdown(set_value: Callable[[str, str], None]) -> int:
    for name in FORGOTTEN_AFTER_DOWN:
        set_value(name, "")
    print("Key Vault salt cleared: the next `azd up` creates vaults under new names.")
    return 0


def main(argv: list[str], env: Mapping[str, str], set_value: Callable[[str, str], None] = azd_env_set) -> int:
    if argv == ["preprovision"]:
        return preprovision(env, set_value)
    if argv == ["postdown"]:
        return postdown(set_value)
    print("usage: azd_hooks.py preprovision | postdown", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], os.environ))
