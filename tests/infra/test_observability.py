"""The workbook and the alert rules against the telemetry contract of the code.

The gateway exports through azure-monitor-opentelemetry into the workspace: metrics in AppMetrics (Name, Sum /
ItemCount / Min / Max, dimensions in Properties), one JSON line per request in AppTraces. Every query may only use
metric names and dimensions the code emits, and the panels the operators need must be there.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from tests.infra.bicep import INFRA, evaluate, function, module, render, scope, tree, unwrap, variable

_GENAI = {
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.request.model",
    "server.address",
    "gateway.host",
    "gateway.client",
}
METRICS = {
    "gen_ai.client.token.usage": _GENAI | {"gen_ai.token.type"},
    "gen_ai.client.operation.duration": _GENAI | {"http.response.status_code", "error.type"},
    "gen_ai.client.operation.time_to_first_chunk": _GENAI | {"http.response.status_code", "error.type"},
    "gateway.requests": {"gateway.client", "gen_ai.request.model", "gateway.host", "http.response.status_code"},
    "gateway.upstream.rate_limited": {"gateway.host", "gateway.rate_limit.kind"},
    "gateway.retries": {"gateway.host", "gateway.reason"},
    "gateway.cooldowns": {"gateway.host", "gateway.reason"},
    "gateway.ejections": {"gateway.host", "gateway.reason"},
    "gateway.client.rejections": {"gateway.client", "gateway.reason"},
    "gateway.host.window.utilization": {"gateway.host", "gateway.window"},
    "gateway.host.quota.tokens": {"gateway.host"},
    "gateway.hosts.available": {"gen_ai.request.model"},
    "gateway.panic": {"gen_ai.request.model"},
}
LOG_FIELDS = {
    "request_id",
    "client",
    "deployment",
    "host",
    "status",
    "attempts",
    "input_tokens",
    "output_tokens",
    "duration_ms",
    "ttfb_ms",
    "stream",
}
LOG_LINES = (
    'AppTraces\n| where Message startswith "{" and Message has "\\"request_id\\""\n| extend r = parse_json(Message)\n'
)
WORKSPACE = "microsoft.operationalinsights/workspaces"
WORKBOOK = json.loads((INFRA / "app" / "workbook.json").read_text())


def query_items(items: list[dict[str, Any]] = WORKBOOK["items"]) -> Iterator[dict[str, Any]]:
    for item in items:
        if item["type"] == 3:
            yield item
        elif item["type"] == 12:  # a group of items
            yield from query_items(item["content"]["items"])


def metrics_named(kql: str) -> set[str]:
    names = set(re.findall(r'\bName == "([^"]+)"', kql))
    for group in re.findall(r"\bName in \(([^)]*)\)", kql):
        names |= set(re.findall(r'"([^"]+)"', group))
    return names


def dimensions(kql: str) -> set[str]:
    return set(re.findall(r'Properties\["([^"]+)"\]', kql))


def well_formed(kql: str) -> bool:
    """Cheap sanity a KQL parser would also demand: balanced brackets and quotes, a table or `let` first."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', kql)
    balanced = all(text.count(a) == text.count(b) for a, b in ("()", "[]", "{}"))
    return balanced and '"' not in text.replace('""', "") and re.match(r"(let |AppMetrics|AppTraces)", kql) is not None


def queries() -> dict[str, str]:
    return {item["name"]: item["content"]["query"] for item in query_items()}


def test_the_workbook_is_deployed_over_the_workspace() -> None:
    body = unwrap(tree("app/observability.bicep")["resources"]["workbook"]["config"])
    assert tree("app/observability.bicep")["resources"]["workbook"]["type"] == "Microsoft.Insights/workbooks"
    assert body["kind"] == "shared" and body["name"] == "workbookName"
    properties = body["properties"]
    assert properties["version"] == WORKBOOK["version"] == "Notebook/1.0"
    assert properties["sourceId"] == "logAnalyticsWorkspaceId"
    data = function(function(properties["serializedData"], "string")["parameters"]["value_to_convert"], "union")
    loaded, added = data["parameters"]["arg_1"], data["parameters"]["arg_2"]
    assert function(loaded, "load_json_content")["parameters"]["file_path"] == "workbook.json"
    assert added == {"fallbackResourceIds": ["logAnalyticsWorkspaceId"]}
    wiring = module("main.bicep", "observability")["config"]["params"]
    assert render(wiring["logAnalyticsWorkspaceId"]) == "monitoring.outputs.logAnalyticsWorkspaceId"
    assert function(wiring["workbookName"], "guid")  # workbook names are GUIDs, stable per resource group


def test_every_query_reads_only_what_the_code_emits() -> None:
    found = queries()
    assert len(found) >= 8
    for name, kql in found.items():
        assert well_formed(kql), f"{name}: malformed query"
        named = metrics_named(kql)
        assert named <= set(METRICS), f"{name}: unknown metrics {named - set(METRICS)}"
        allowed = set().union(*(METRICS[metric] for metric in named)) if named else set()
        assert dimensions(kql) <= allowed, f"{name}: {dimensions(kql) - allowed} are not dimensions of {named}"
        if "AppTraces" in kql:
            assert LOG_LINES in kql, f"{name}: select the per-request lines as the code writes them"
            fields = set(re.findall(r"\br\.(\w+)", kql))
            assert fields and fields <= LOG_FIELDS, f"{name}: unknown log fields {fields - LOG_FIELDS}"
        else:
            assert named, f"{name}: reads neither AppMetrics by name nor the request lines"


def test_the_panels_operators_need_are_there() -> None:
    found = list(queries().values())

    def any_query(*needles: str) -> bool:
        return any(all(needle in kql for needle in needles) for kql in found)

    # Tokens per minute per region against quota, in one chart.
    assert any_query('"gen_ai.client.token.usage"', '"gateway.host.quota.tokens"', 'Properties["gateway.host"]', "1m")
    # 429s the regions answered (by kind) and 429s sent to clients.
    assert any_query('"gateway.upstream.rate_limited"', 'Properties["gateway.rate_limit.kind"]')
    assert any_query('"gateway.requests"', '"http.response.status_code"', '"429"')
    # Latency and time to first token percentiles from the request lines; time to first chunk from the metric.
    assert any_query(LOG_LINES, "percentile(todouble(r.duration_ms), 50)", "percentile(todouble(r.duration_ms), 95)")
    assert any_query(LOG_LINES, "percentile(todouble(r.ttfb_ms), 50)", "percentile(todouble(r.ttfb_ms), 95)")
    assert any_query('"gen_ai.client.operation.time_to_first_chunk"', "sum(ItemCount)")
    # Per-client usage: tokens by type, requests, refusals.
    assert any_query('Properties["gateway.client"]', '"gen_ai.token.type"', '"gateway.client.rejections"')


def test_every_query_follows_the_time_range_and_runs_on_the_workspace() -> None:
    (parameters,) = [item for item in WORKBOOK["items"] if item["type"] == 9]
    assert [p["name"] for p in parameters["content"]["parameters"]] == ["TimeRange"]
    items = list(query_items())
    assert len({item["name"] for item in items}) == len(items)
    for item in items:
        content = item["content"]
        assert content["version"] == "KqlItem/1.0" and content["queryType"] == 0
        assert content["resourceType"] == WORKSPACE
        assert content["timeContextFromParameter"] == "TimeRange"
        assert content["visualization"] in {"timechart", "table", "barchart", "linechart", "tiles"}


def _alerts() -> dict[str, dict[str, Any]]:
    return {alert["name"]: alert for alert in variable("app/observability.bicep", "alerts")}


def test_alert_every_host_of_a_deployment_cooling_down() -> None:
    kql = _alerts()["every-host-cooling-down"]["query"].replace("\\n", "\n")
    assert metrics_named(kql) == {"gateway.hosts.available"}
    assert dimensions(kql) == {"gen_ai.request.model"} and "Model = " in kql
    assert "bin(TimeGenerated, 1m)" in kql and kql.rstrip().endswith("| where Available == 0")
    assert "max(Max)" in kql, "fires only when no instance had a host able to take traffic"
    assert well_formed(kql)


def test_alert_panic_routing() -> None:
    kql = _alerts()["panic-routing"]["query"].replace("\\n", "\n")
    assert metrics_named(kql) == {"gateway.panic"}
    assert dimensions(kql) == {"gen_ai.request.model"} and "Model = " in kql
    assert kql.rstrip().endswith("| where Panic > 0") and well_formed(kql)


def test_alert_rules_query_the_workspace_and_notify_the_optional_action_group() -> None:
    rules = tree("app/observability.bicep")["resources"]["alertRules"]
    assert rules["type"] == "Microsoft.Insights/scheduledQueryRules"
    assert rules["config"]["loop_type"]["detail"]["array_name"] == "alerts"
    assert set(_alerts()) == {"every-host-cooling-down", "panic-routing"}
    properties = unwrap(rules["config"])["properties"]
    assert properties["scopes"] == ["logAnalyticsWorkspaceId"]
    assert (properties["evaluationFrequency"], properties["windowSize"]) == ("PT5M", "PT5M")
    assert properties["skipQueryValidation"] is True  # AppMetrics exists only once telemetry arrives
    (condition,) = properties["criteria"]["allOf"]
    assert (condition["timeAggregation"], condition["operator"], condition["threshold"]) == ("Count", "GreaterThan", 0)
    assert condition["dimensions"] == [{"name": "Model", "operator": "Include", "values": ["*"]}]
    # The action group exists only with an e-mail address, and the rules notify it only then.
    group = tree("app/observability.bicep")["resources"]["actionGroup"]
    names = scope("app/observability.bicep", {"alertEmail": ""})
    assert evaluate(group["config"]["condition"], names) is False
    assert evaluate(group["config"]["condition"], scope("app/observability.bicep", {"alertEmail": "ops@x"})) is True
    (receiver,) = unwrap(group["config"])["properties"]["emailReceivers"]
    assert receiver["emailAddress"] == "alertEmail"
    actions = properties["actions"]["actionGroups"]["operator"]["operands"]
    assert actions["condition"] == "hasActionGroup" and render(actions["true_value"][0]) == "actionGroup.id"
    assert actions["false_value"] == []
    assert module("main.bicep", "observability")["config"]["params"]["alertEmail"] == "alertEmail"
    assert tree("main.bicep")["parameters"]["alertEmail"]["default"] == ""
