"""Settings: the only module that reads the environment and the configuration file.

Everything is validated at start-up into frozen objects; an error names the field at fault.
Secrets come from app settings (in Azure, Key Vault references resolved by the platform) and
are wrapped so that no repr or log line can show them.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.cluster import Cluster, Host, HostAuth, ProbeSpec

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "gateway.json"


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names it."""


class Secret:
    """A secret value that never shows itself in a repr, str or log line."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__


@dataclass(frozen=True)
class Limits:
    """A client's budget: token and request rates (sliding windows like Azure's) and real tokens per UTC day."""

    tpm: int | None = None
    rpm: int | None = None
    tokens_per_day: int | None = None

    @property
    def empty(self) -> bool:
        return self.tpm is None and self.rpm is None and self.tokens_per_day is None


@dataclass(frozen=True)
class Client:
    """A consuming application; several keys may be valid at once during a rotation."""

    name: str
    keys: tuple[Secret, ...] = ()  # from app settings, read once at start
    key_secrets: tuple[str, ...] = ()  # Key Vault secret names, re-read while running (rotation, no restart)
    limits: Limits = field(default_factory=Limits)
    deployment_limits: Mapping[str, Limits] = field(default_factory=dict)  # logical deployment -> its own limits
    priority: str = "normal"  # "low": only the headroom above routing.low_priority_reserve
    admin: bool = False  # may reach objects whose owner is unknown, and read /usage
    entra_app_ids: tuple[str, ...] = ()  # Entra applications (azp / appid) that act as this client

    @property
    def limited(self) -> bool:
        """Has any limit (the request path skips the client's windows when it has none)."""
        return not self.limits.empty or any(not limits.empty for limits in self.deployment_limits.values())


@dataclass(frozen=True)
class Routing:
    """Tuning of routing, retries and limits. Durations are clock seconds."""

    default_max_tokens: int = 4096
    max_tokens_defaults: Mapping[str, int] = field(default_factory=dict)
    window_seconds: float = 60.0
    request_window_seconds: float = 10.0
    # Our reservation is stamped before Azure admits it; expire it at least this much later (it adapts upward).
    expiry_margin_seconds: float = 0.1
    deadline_seconds: float = 120.0
    connect_timeout_seconds: float = 5.0
    stream_idle_timeout_seconds: float = 120.0
    wait_budget_seconds: float = 2.0
    max_retry_after_seconds: float = 60.0
    default_cooldown_seconds: float = 5.0
    consecutive_failures: int = 2
    ejection_base_seconds: float = 10.0
    ejection_max_seconds: float = 120.0
    max_attempts: int = 3
    backoff_base_seconds: float = 0.02
    max_body_bytes: int = 25 * 1024 * 1024
    max_in_flight: int = 1000
    # Separate from the stream idle timeout: a non-streaming generation sends its headers only when it is done.
    response_header_timeout_seconds: float = 120.0
    low_priority_reserve: float = 0.2  # of each host's window, kept free of low-priority clients
    max_json_depth: int = 100
    # An id the gateway has no record of is looked for in every region, at most this often per client,
    # and an id found nowhere is not looked for again for a while.
    discovery_lookups_per_minute: int = 60
    discovery_negative_cache_seconds: float = 30.0

    def max_tokens_default(self, logical: str) -> int:
        return self.max_tokens_defaults.get(logical, self.default_max_tokens)


@dataclass(frozen=True)
class CredentialSettings:
    """How the gateway signs in upstream: default chain, managed identity, the seed's SPN, or a static dev token."""

    mode: str = "default"
    managed_identity_client_id: str | None = None
    keyvault_uri: str | None = None
    spn_tenant_id: str | None = None
    spn_client_id: str | None = None
    spn_secret_name: str | None = None
    static_token: Secret | None = None


@dataclass(frozen=True)
class TableSettings:
    connection_string: Secret | None = None
    endpoint: str | None = None
    flush_interval_seconds: float = 1.0
    read_cache_seconds: float = 1.0
    health_cache_seconds: float = 5.0

    @property
    def configured(self) -> bool:
        return self.connection_string is not None or self.endpoint is not None


@dataclass(frozen=True)
class EntraSettings:
    tenants: tuple[str, ...] = ()
    audiences: tuple[str, ...] = ()
    required_role: str | None = None
    authority: str = "https://login.microsoftonline.com"

    @property
    def enabled(self) -> bool:
        return bool(self.tenants and self.audiences)


@dataclass(frozen=True)
class TelemetrySettings:
    """Where metrics and traces go: Application Insights, an OTLP endpoint, both, or nowhere (then no cost)."""

    azure_monitor: Secret | None = None  # the connection string (it names the resource, holds no secret we own)
    entra_ingestion: bool = False  # the resource takes Entra ID tokens only: send with the managed identity
    managed_identity_client_id: str | None = None
    otlp_endpoint: str | None = None

    @property
    def enabled(self) -> bool:
        return self.azure_monitor is not None or self.otlp_endpoint is not None


@dataclass(frozen=True)
class Settings:
    cluster: Cluster
    clients: tuple[Client, ...]
    host_keys: Mapping[str, Secret]  # Host.key -> api key, for api-key hosts
    routing: Routing = field(default_factory=Routing)
    key_refresh_seconds: float = 300.0
    credential: CredentialSettings = field(default_factory=CredentialSettings)
    table: TableSettings = field(default_factory=TableSettings)
    entra: EntraSettings = field(default_factory=EntraSettings)
    instance_id: str = "local"
    time_scale: float = 1.0
    entra_default_client: str | None = None  # what Entra applications no client lists act as; None: refused
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)
    warnings: tuple[str, ...] = ()  # problems that do not stop the gateway; logged once at start


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read GATEWAY_CONFIG (a path, or inline JSON) and the app settings it names."""
    env = os.environ if env is None else env
    raw = _read_config(env.get("GATEWAY_CONFIG", "").strip())
    doc = _object(raw, "config")
    _known_keys(doc, "config", _TOP_LEVEL)
    cluster = _cluster(doc.get("deployments"))
    warnings: list[str] = []
    clients = _clients(doc.get("clients", []), env, warnings)
    entra = _entra(env)
    default_client = _default_client(doc.get("entra_default_client"), clients)
    if not clients and not entra.enabled:
        raise ConfigError(
            "clients: no gateway keys and no Entra ID callers (GATEWAY_ENTRA_TENANT_ID, GATEWAY_ENTRA_AUDIENCE) "
            "are configured, so nobody could call the gateway"
        )
    routing = _routing(doc.get("routing", {}))
    _named_deployments(cluster, routing, clients)
    return Settings(
        cluster=cluster,
        clients=clients,
        host_keys=_host_keys(cluster, env),
        routing=routing,
        credential=_credential(env),
        table=_table(env),
        entra=entra,
        instance_id=env.get("WEBSITE_INSTANCE_ID") or env.get("GATEWAY_INSTANCE_ID") or "local",
        time_scale=_positive_float(env.get("GATEWAY_TIME_SCALE", "1"), "GATEWAY_TIME_SCALE"),
        key_refresh_seconds=_positive_float(
            env.get("GATEWAY_KEY_REFRESH_SECONDS", "300"), "GATEWAY_KEY_REFRESH_SECONDS"
        ),
        entra_default_client=default_client,
        telemetry=_telemetry(env),
        warnings=tuple(warnings),
    )


def _read_config(value: str) -> Any:
    if value.startswith("{"):
        source, text = "GATEWAY_CONFIG", value
    else:
        path = Path(value) if value else DEFAULT_CONFIG_PATH
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"GATEWAY_CONFIG: cannot read {path}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"GATEWAY_CONFIG: {source} is not valid JSON (line {exc.lineno}: {exc.msg})") from None


def _cluster(raw: Any) -> Cluster:
    deployments = _object(raw, "deployments")
    if not deployments:
        raise ConfigError("deployments: at least one logical deployment is required")
    result: dict[str, tuple[Host, ...]] = {}
    quotas: dict[str, tuple[int, int, str]] = {}
    for logical, hosts_raw in deployments.items():
        where = f"deployments.{logical}"
        if not isinstance(hosts_raw, list) or not hosts_raw:
            raise ConfigError(f"{where}: must be a non-empty list of hosts")
        hosts = tuple(_host(item, f"{where}[{i}]") for i, item in enumerate(hosts_raw))
        names = [h.name for h in hosts]
        if len(set(names)) != len(names):
            raise ConfigError(f"{where}: host names must be unique within a deployment")
        for host, i in zip(hosts, range(len(hosts)), strict=True):
            # One physical deployment listed under two logical names must agree on its quota.
            seen = quotas.setdefault(host.key, (host.tpm, host.rpm, host.endpoint))
            if seen != (host.tpm, host.rpm, host.endpoint):
                raise ConfigError(f"{where}[{i}]: {host.key} is listed elsewhere with another endpoint or quota")
        result[logical] = hosts
    return Cluster(result)


_TOP_LEVEL = ("deployments", "clients", "entra_default_client", "routing")
_HOST_FIELDS = ("name", "endpoint", "deployment", "tpm", "rpm", "priority", "weight", "auth", "probe")


def _known_keys(item: Mapping[str, Any], where: str, known: tuple[str, ...]) -> None:
    """A misspelt field would be silently ignored (a limit never enforced): refuse it, naming the known ones."""
    for key in item:
        if key not in known:
            raise ConfigError(f"{where}.{key}: unknown setting ({', '.join(known)})")


def _named_deployments(cluster: Cluster, routing: Routing, clients: tuple[Client, ...]) -> None:
    """Settings per logical deployment must name one that exists (a typo would apply to nothing)."""
    served = cluster.deployments
    named = [(f"routing.max_tokens_defaults.{name}", name) for name in routing.max_tokens_defaults]
    named += [
        (f"clients[{index}].limits.deployments.{name}", name)
        for index, client in enumerate(clients)
        for name in client.deployment_limits
    ]
    for where, name in named:
        if name not in served:
            raise ConfigError(f"{where}: no such deployment (deployments: {', '.join(sorted(served))})")


def _host(raw: Any, where: str) -> Host:
    item = _object(raw, where)
    _known_keys(item, where, _HOST_FIELDS)
    name = _string(item.get("name"), f"{where}.name")
    endpoint = _string(item.get("endpoint"), f"{where}.endpoint").rstrip("/")
    if not endpoint.startswith(("https://", "http://")) or "@" in endpoint or "?" in endpoint or "#" in endpoint:
        raise ConfigError(f"{where}.endpoint: must be an http(s) URL with no credentials, query or fragment")
    tpm = _positive_int(item.get("tpm"), f"{where}.tpm")
    # Azure derives RPM from TPM: 6 requests per minute per 1,000 TPM.
    rpm = _positive_int(item.get("rpm", max(1, tpm * 6 // 1000)), f"{where}.rpm")
    return Host(
        name=name,
        endpoint=endpoint,
        deployment=_string(item.get("deployment"), f"{where}.deployment"),
        tpm=tpm,
        rpm=rpm,
        priority=_positive_int(item.get("priority", 1), f"{where}.priority"),
        weight=_positive_float(item.get("weight", 1), f"{where}.weight"),
        auth=_auth(item.get("auth", {"type": "entra"}), f"{where}.auth"),
        probe=_probe(item.get("probe", {}), f"{where}.probe"),
    )


_PROBE_PATH = re.compile(r"^/openai/[A-Za-z0-9/_.-]{1,200}$")


def _probe(raw: Any, where: str) -> ProbeSpec:
    item = _object(raw, where)
    for key in item:
        if key not in ("path", "api_version"):
            raise ConfigError(f"{where}.{key}: unknown setting (path, api_version)")
    path = item.get("path", ProbeSpec.path)
    if not isinstance(path, str) or not _PROBE_PATH.fullmatch(path) or ".." in path:
        raise ConfigError(f"{where}.path: must be a path under /openai/ (letters, digits, / _ . -)")
    version = item.get("api_version", ProbeSpec.api_version if "path" not in item else None)
    if version is not None and (not isinstance(version, str) or not re.fullmatch(r"[A-Za-z0-9.-]{1,40}", version)):
        raise ConfigError(f"{where}.api_version: must be an api-version such as 2024-10-21, or null")
    return ProbeSpec(path, version)


def _auth(raw: Any, where: str) -> HostAuth:
    item = _object(raw, where)
    kind = item.get("type")
    if kind == "entra":
        return HostAuth("entra")
    if kind == "api-key":
        return HostAuth("api-key", _string(item.get("setting"), f"{where}.setting"))
    raise ConfigError(f"{where}.type: must be 'entra' or 'api-key'")


def _host_keys(cluster: Cluster, env: Mapping[str, str]) -> dict[str, Secret]:
    keys: dict[str, Secret] = {}
    for host in cluster.all_hosts():
        if host.auth.type == "api-key" and host.auth.setting:
            value = env.get(host.auth.setting, "").strip()
            if _unresolved(value):
                raise ConfigError(f"{host.auth.setting}: {_UNRESOLVED}")
            if not value:
                raise ConfigError(f"{host.auth.setting}: app setting with the api key of host {host.key} is not set")
            keys[host.key] = Secret(value)
    return keys


def _clients(raw: Any, env: Mapping[str, str], warnings: list[str]) -> tuple[Client, ...]:
    if not isinstance(raw, list):
        raise ConfigError("clients: must be a list")
    clients = []
    seen: set[str] = set()
    for i, item_raw in enumerate(raw):
        where = f"clients[{i}]"
        item = _object(item_raw, where)
        name = _string(item.get("name"), f"{where}.name")
        if not _CLIENT_NAME.fullmatch(name):
            raise ConfigError(f"{where}.name: letters, digits, '.', '_' and '-' only (at most 64)")
        if name in seen:
            raise ConfigError(f"{where}.name: client {name!r} is listed twice")
        seen.add(name)
        for key in item:
            if key not in _CLIENT_FIELDS:
                raise ConfigError(f"{where}.{key}: unknown setting")
        settings = item.get("key_settings", [item.get("key_setting")] if "key_setting" in item else [])
        secrets = item.get("key_secrets", [])
        app_ids = _app_ids(item.get("entra_app_ids", []), f"{where}.entra_app_ids")
        if not isinstance(settings, list) or not isinstance(secrets, list) or not (settings or secrets or app_ids):
            raise ConfigError(
                f"{where}.key_setting: name the app setting (or key_secrets: the Key Vault secrets) "
                "that hold this client's key, or the entra_app_ids that act as it"
            )
        for j, secret in enumerate(secrets):
            if not isinstance(secret, str) or not _SECRET_NAME.fullmatch(secret):
                raise ConfigError(f"{where}.key_secrets[{j}]: must be a Key Vault secret name (letters, digits, -)")
        if secrets and not env.get("GATEWAY_KEYVAULT_URI"):
            raise ConfigError(f"GATEWAY_KEYVAULT_URI: required to read the key_secrets of client {name!r}")
        keys = []
        for setting in settings:
            setting_name = _string(setting, f"{where}.key_setting")
            value = env.get(setting_name, "").strip()
            if _unresolved(value):
                # Its secret does not exist yet (or is unreadable): this client cannot call, the rest can.
                warnings.append(f"{setting_name}: {_UNRESOLVED}; client {name!r} cannot use that key")
            elif value:  # during a rotation the second setting may be empty
                keys.append(Secret(value))
        if keys or secrets or app_ids:
            clients.append(
                Client(
                    name,
                    tuple(keys),
                    tuple(secrets),
                    limits=_limits(item.get("limits", {}), f"{where}.limits", nested=True),
                    deployment_limits=_deployment_limits(item.get("limits", {}), f"{where}.limits"),
                    priority=_choice(item.get("priority", "normal"), ("normal", "low"), f"{where}.priority"),
                    admin=_bool(item.get("admin", False), f"{where}.admin"),
                    entra_app_ids=app_ids,
                )
            )
        elif not any(_unresolved(env.get(str(x), "").strip()) for x in settings):
            raise ConfigError(f"{', '.join(settings)}: app setting with the key of client {name!r} is not set")
    owners: dict[str, str] = {}
    for client in clients:
        for app_id in client.entra_app_ids:
            if owners.setdefault(app_id, client.name) != client.name:
                raise ConfigError(
                    f"clients: Entra application {app_id} is listed by {owners[app_id]!r} and {client.name!r}"
                )
    return tuple(clients)


_CLIENT_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_CLIENT_FIELDS = frozenset(
    {"name", "key_setting", "key_settings", "key_secrets", "limits", "priority", "admin", "entra_app_ids"}
)
_LIMIT_FIELDS = ("tpm", "rpm", "tokens_per_day")
_APP_ID = re.compile(r"[0-9A-Za-z-]{1,64}")


def _limits(raw: Any, where: str, *, nested: bool) -> Limits:
    item = _object(raw, where)
    values: dict[str, int] = {}
    for key, value in item.items():
        if key == "deployments" and nested:
            continue
        if key not in _LIMIT_FIELDS:
            raise ConfigError(
                f"{where}.{key}: unknown limit ({', '.join(_LIMIT_FIELDS)}" + (", deployments)" if nested else ")")
            )
        values[key] = _positive_int(value, f"{where}.{key}")
    return Limits(**values)


def _deployment_limits(raw: Any, where: str) -> dict[str, Limits]:
    table = _object(_object(raw, where).get("deployments", {}), f"{where}.deployments")
    return {name: _limits(value, f"{where}.deployments.{name}", nested=False) for name, value in table.items()}


def _app_ids(raw: Any, where: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(x, str) and _APP_ID.fullmatch(x) for x in raw):
        raise ConfigError(f"{where}: must be a list of application (client) ids")
    return tuple(x.lower() for x in raw)


def _default_client(raw: Any, clients: tuple[Client, ...]) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or raw not in {c.name for c in clients}:
        raise ConfigError("entra_default_client: must name a client listed in 'clients'")
    return raw


def _choice(raw: Any, allowed: tuple[str, ...], where: str) -> str:
    if raw not in allowed:
        raise ConfigError(f"{where}: must be one of {', '.join(allowed)}")
    return str(raw)


def _bool(raw: Any, where: str) -> bool:
    if not isinstance(raw, bool):
        raise ConfigError(f"{where}: must be true or false")
    return raw


_SECRET_NAME = re.compile(r"[0-9A-Za-z-]{1,127}")
_UNRESOLVED = (
    "is an unresolved Key Vault reference; does the secret exist, and does the Function's identity have "
    "'Key Vault Secrets User' on the vault?"
)


def _unresolved(value: str) -> bool:
    """The platform leaves the literal reference when a secret is missing or unreadable: never a key."""
    return value.startswith("@Microsoft.KeyVault(")


_POSITIVE_DURATIONS = frozenset(
    {
        "window_seconds",
        "request_window_seconds",
        "deadline_seconds",
        "connect_timeout_seconds",
        "stream_idle_timeout_seconds",
        "response_header_timeout_seconds",
    }
)


def _routing(raw: Any) -> Routing:
    item = _object(raw, "routing")
    known = Routing.__dataclass_fields__
    values: dict[str, Any] = {}
    for key, value in item.items():
        if key not in known:
            raise ConfigError(f"routing.{key}: unknown setting")
        if key == "max_tokens_defaults":
            table = _object(value, "routing.max_tokens_defaults")
            values[key] = {k: _positive_int(v, f"routing.max_tokens_defaults.{k}") for k, v in table.items()}
        elif isinstance(getattr(Routing, key, None), int) and not isinstance(getattr(Routing, key), bool):
            values[key] = _positive_int(value, f"routing.{key}")
        elif key in _POSITIVE_DURATIONS:
            values[key] = _positive_float(value, f"routing.{key}")
        elif key == "low_priority_reserve":
            values[key] = _non_negative_float(value, f"routing.{key}")
            if values[key] >= 1:
                raise ConfigError("routing.low_priority_reserve: must be a fraction below 1")
        else:
            values[key] = _non_negative_float(value, f"routing.{key}")
    return Routing(**values)


def _credential(env: Mapping[str, str]) -> CredentialSettings:
    mode = env.get("GATEWAY_CREDENTIAL", "default").strip() or "default"
    if mode not in ("default", "managed-identity", "spn", "static"):
        raise ConfigError("GATEWAY_CREDENTIAL: must be default, managed-identity, spn or static")
    settings = CredentialSettings(
        mode=mode,
        managed_identity_client_id=env.get("AZURE_CLIENT_ID") or None,
        keyvault_uri=env.get("GATEWAY_KEYVAULT_URI") or None,
        spn_tenant_id=env.get("GATEWAY_SPN_TENANT_ID") or None,
        spn_client_id=env.get("GATEWAY_SPN_CLIENT_ID") or None,
        spn_secret_name=env.get("GATEWAY_SPN_SECRET_NAME") or None,
        static_token=Secret(env["GATEWAY_STATIC_TOKEN"]) if env.get("GATEWAY_STATIC_TOKEN") else None,
    )
    if mode == "spn":
        for name, value in (
            ("GATEWAY_SPN_TENANT_ID", settings.spn_tenant_id),
            ("GATEWAY_SPN_CLIENT_ID", settings.spn_client_id),
            ("GATEWAY_SPN_SECRET_NAME", settings.spn_secret_name),
            ("GATEWAY_KEYVAULT_URI", settings.keyvault_uri),
        ):
            if not value:
                raise ConfigError(f"{name}: required when GATEWAY_CREDENTIAL is spn")
    if mode == "static" and settings.static_token is None:
        raise ConfigError("GATEWAY_STATIC_TOKEN: required when GATEWAY_CREDENTIAL is static (local simulators only)")
    return settings


def _table(env: Mapping[str, str]) -> TableSettings:
    connection = env.get("GATEWAY_TABLE_CONNECTION_STRING", "")
    endpoint = env.get("GATEWAY_TABLE_ENDPOINT", "").rstrip("/")
    if endpoint and not endpoint.startswith(("https://", "http://")):
        raise ConfigError("GATEWAY_TABLE_ENDPOINT: must be an http(s) URL")
    return TableSettings(
        connection_string=Secret(connection) if connection else None,
        endpoint=endpoint or None,
        flush_interval_seconds=_positive_float(
            env.get("GATEWAY_LEDGER_FLUSH_SECONDS", "1"), "GATEWAY_LEDGER_FLUSH_SECONDS"
        ),
        read_cache_seconds=_positive_float(env.get("GATEWAY_LEDGER_READ_SECONDS", "1"), "GATEWAY_LEDGER_READ_SECONDS"),
        health_cache_seconds=_positive_float(
            env.get("GATEWAY_HEALTH_CACHE_SECONDS", "5"), "GATEWAY_HEALTH_CACHE_SECONDS"
        ),
    )


def _telemetry(env: Mapping[str, str]) -> TelemetrySettings:
    connection = env.get("APPLICATIONINSIGHTS_CONNECTION_STRING", "").strip()
    endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip().rstrip("/")
    if endpoint and not endpoint.startswith(("https://", "http://")):
        raise ConfigError("OTEL_EXPORTER_OTLP_ENDPOINT: must be an http(s) URL")
    return TelemetrySettings(
        azure_monitor=Secret(connection) if connection else None,
        entra_ingestion="Authorization=AAD" in env.get("APPLICATIONINSIGHTS_AUTHENTICATION_STRING", ""),
        managed_identity_client_id=env.get("AZURE_CLIENT_ID") or None,
        otlp_endpoint=endpoint or None,
    )


def _entra(env: Mapping[str, str]) -> EntraSettings:
    def split(name: str) -> tuple[str, ...]:
        return tuple(part.strip() for part in env.get(name, "").split(",") if part.strip())

    authority = env.get("GATEWAY_ENTRA_AUTHORITY", "").rstrip("/") or EntraSettings.authority
    return EntraSettings(
        tenants=split("GATEWAY_ENTRA_TENANT_ID"),
        audiences=split("GATEWAY_ENTRA_AUDIENCE"),
        required_role=env.get("GATEWAY_ENTRA_REQUIRED_ROLE") or None,
        authority=authority,
    )


def _object(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a JSON object")
    return raw


def _string(raw: Any, where: str) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ConfigError(f"{where}: must be a non-empty string")
    return raw.strip()


def _positive_int(raw: Any, where: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw <= 0:
        raise ConfigError(f"{where}: must be a positive integer")
    return raw


def _positive_float(raw: Any, where: str) -> float:
    value = _non_negative_float(raw, where)
    if value <= 0:
        raise ConfigError(f"{where}: must be positive")
    return value


def _non_negative_float(raw: Any, where: str) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: must be a number") from None
    if isinstance(raw, bool) or value < 0 or value != value:
        raise ConfigError(f"{where}: must be a non-negative number")
    return value
