"""Contract between loadme.telemetry and what infra/main.json deploys for the Azure portal: every field a workbook
or alert query names is one the app writes for the record type the query filters on, and monitoring is set up as
issue 9 asks (workspace-based Application Insights without local auth, a workbook, alert rules with an action group)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from loadme.telemetry import RECORD_FIELDS
from tests.infra_model import evaluator, management, resources

# The run states a run ends in (loadme.telemetry: `state` is set on the run's terminal event).
TERMINAL_STATES = {"succeeded", "failed", "timed_out", "cancelled"}
_FIELD = [re.compile(p) for p in (
    r"\bProperties\.(\w+)",
    r"\bProperties\[\s*['\"](\w+)['\"]\s*\]",
    r"\bcustomDimensions\.(\w+)",
    r"\bcustomDimensions\[\s*['\"](\w+)['\"]\s*\]",
)]
_RECORD_TYPE_EQUALS = re.compile(r"record_type['\"]?\]?\)?\s*==\s*['\"](\w+)['\"]")
_RECORD_TYPE_IN = re.compile(r"record_type['\"]?\]?\)?\s+in\s*\(([^)]*)\)")
_STATE_EQUALS = re.compile(r"\bstate\s*==\s*['\"](\w+)['\"]")
_STATE_IN = re.compile(r"\bstate\s+in\s*\(([^)]*)\)")


def _strings(text: str) -> list[str]:
    return re.findall(r"['\"](\w+)['\"]", text)


def fields_used(query: str) -> set[str]:
    return {m.group(1) for pattern in _FIELD for m in pattern.finditer(query)}


def record_types(query: str) -> set[str]:
    found = set(_RECORD_TYPE_EQUALS.findall(query))
    for group in _RECORD_TYPE_IN.findall(query):
        found |= set(_strings(group))
    return found


def problems(query: str) -> list[str]:
    """Why `query` names something the app does not write (empty when it is fine)."""
    found = []
    fields = fields_used(query) - {"record_type"}
    types = record_types(query)
    if fields and not types:
        found.append(f"names fields {sorted(fields)} without filtering on record_type")
    for record_type in sorted(types):
        if record_type not in RECORD_FIELDS:
            found.append(f"record_type {record_type!r} is not one the app writes")
            continue
        for field in sorted(fields - set(RECORD_FIELDS[record_type])):
            found.append(f"{record_type} records have no field {field!r}")
    states = set(_STATE_EQUALS.findall(query))
    for group in _STATE_IN.findall(query):
        states |= set(_strings(group))
    found += [f"state {s!r} is not a terminal run state" for s in sorted(states - TERMINAL_STATES)]
    return found


def _workbook_items(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if "type" in node and "content" in node:
            yield node
        for value in node.values():
            yield from _workbook_items(value)
    elif isinstance(node, list):
        for value in node:
            yield from _workbook_items(value)


def workbook() -> dict[str, Any]:
    content: dict[str, Any] = management()["variables"]["workbookContent"]
    return content


def workbook_queries() -> dict[str, str]:
    return {item["name"]: item["content"]["query"] for item in _workbook_items(workbook()) if item["type"] == 3}


def alert_rules() -> list[dict[str, Any]]:
    return [r for r in resources(management()) if r["type"] == "Microsoft.Insights/scheduledQueryRules"]


def alert_queries() -> dict[str, str]:
    return {f"{rule['name']}#{i}": criterion["query"]
            for rule in alert_rules() for i, criterion in enumerate(rule["properties"]["criteria"]["allOf"])}


def all_queries() -> dict[str, str]:
    return {**{f"workbook:{k}": v for k, v in workbook_queries().items()},
            **{f"alert:{k}": v for k, v in alert_queries().items()}}


def test_every_query_names_only_fields_the_app_writes() -> None:
    queries = all_queries()
    assert len(workbook_queries()) >= 8 and len(alert_queries()) == 4
    found = {where: problems(query) for where, query in queries.items()}
    assert {where: p for where, p in found.items() if p} == {}
    for where, query in queries.items():
        assert record_types(query), f"{where} does not filter on a record_type"


@pytest.mark.parametrize(("query", "expected"), [
    ('AppTraces | where tostring(Properties.record_type) == "run_event" | extend q = tostring(Properties.queue)',
     "run_event records have no field 'queue'"),
    ('traces | where customDimensions.record_type == "poison_queue" | extend r = customDimensions["run_id"]',
     "poison_queue records have no field 'run_id'"),
    ('AppTraces | where tostring(Properties["record_type"]) in ("janitor_tick") | project Properties["exit_code"]',
     "janitor_tick records have no field 'exit_code'"),
    ('AppTraces | where tostring(Properties.record_type) == "run_started" | project Properties.run_id',
     "record_type 'run_started' is not one the app writes"),
    ("AppTraces | project tostring(Properties.run_id)", "names fields ['run_id'] without filtering on record_type"),
    ('AppTraces | where tostring(Properties.record_type) == "run_event" | where state == "done"',
     "state 'done' is not a terminal run state"),
])
def test_the_check_catches_a_query_the_app_cannot_answer(query: str, expected: str) -> None:
    assert expected in problems(query)


def test_the_workbook_shows_what_operators_watch() -> None:
    queries = workbook_queries()
    assert {"runs-per-day", "success-rate", "duration", "poison-depth", "poison-now", "groups-alive",
            "removals-failed"} <= set(queries)
    assert "percentile(duration_seconds, 50)" in queries["duration"]
    assert "percentile(duration_seconds, 95)" in queries["duration"]
    metrics = [item for item in _workbook_items(workbook()) if item["type"] == 10]
    assert [m["content"]["metrics"][0]["metric"].rsplit("--", 1)[1] for m in metrics] == ["QueueMessageCount"]


def test_the_workbook_is_deployed_from_the_variable_the_test_reads() -> None:
    book = next(r for r in resources(management()) if r["type"] == "Microsoft.Insights/workbooks")
    assert book["properties"]["serializedData"] == "[string(variables('workbookContent'))]"
    assert book["kind"] == "shared" and book["properties"]["category"] == "workbook"
    data = json.loads(evaluator().evaluate(book["properties"]["serializedData"]))
    assert data["version"] == "Notebook/1.0"
    assert all(item["content"]["query"] == workbook_queries()[item["name"]]
               for item in _workbook_items(data) if item["type"] == 3)
    # ARM would read a query that starts with '[' as an expression
    assert not [q for q in all_queries().values() if q.startswith("[")]


def test_each_alert_notifies_the_action_group_and_measures_a_column_its_query_returns() -> None:
    ev = evaluator({"alertEmail": "ops@example.com"})
    group = next(r for r in resources(management()) if r["type"] == "Microsoft.Insights/actionGroups")
    receivers = ev.evaluate(group["properties"]["emailReceivers"])
    assert receivers == [{"name": "operator", "emailAddress": "ops@example.com", "useCommonAlertSchema": True}]
    assert evaluator().evaluate(group["properties"]["emailReceivers"]) == []
    group_id = ev.evaluate("[resourceId('Microsoft.Insights/actionGroups', variables('actionGroupName'))]")
    workspace_id = ev.evaluate("[resourceId('Microsoft.OperationalInsights/workspaces', variables('workspaceName'))]")
    for rule in alert_rules():
        props = ev.evaluate(rule["properties"])
        assert props["enabled"] is True and props["actions"]["actionGroups"] == [group_id]
        assert props["scopes"] == [workspace_id]
        for criterion in props["criteria"]["allOf"]:
            assert re.search(rf"\bsummarize\b.*\b{criterion['metricMeasureColumn']}\s*=", criterion["query"])
        # the workspace's AppTraces table exists only after the first record: creation must not validate the query
        assert props["skipQueryValidation"] is True


def test_the_three_alerts_issue_9_asks_for_plus_a_silent_janitor() -> None:
    names = {evaluator().evaluate(r["name"]) for r in alert_rules()}
    assert names == {"loadme-poison-messages", "loadme-failed-runs", "loadme-groups-past-deadline",
                     "loadme-janitor-silent"}
    queries = {evaluator().evaluate(r["name"]): r["properties"]["criteria"]["allOf"][0] for r in alert_rules()}
    assert record_types(queries["loadme-poison-messages"]["query"]) == {"poison_queue"}
    assert queries["loadme-poison-messages"]["dimensions"][0]["name"] == "queue"
    assert record_types(queries["loadme-failed-runs"]["query"]) == {"run_event"}
    assert queries["loadme-failed-runs"]["threshold"] == "[parameters('failedRunsThreshold')]"
    assert "groups_past_deadline" in fields_used(queries["loadme-groups-past-deadline"]["query"])
    assert queries["loadme-janitor-silent"]["operator"] == "LessThan"


def test_application_insights_is_workspace_based_without_local_auth() -> None:
    inner = management()
    insights = next(r for r in inner["resources"] if r["type"] == "Microsoft.Insights/components")
    workspace = next(r for r in inner["resources"] if r["type"] == "Microsoft.OperationalInsights/workspaces")
    assert insights["properties"]["WorkspaceResourceId"] == (
        "[resourceId('Microsoft.OperationalInsights/workspaces', variables('workspaceName'))]")
    assert insights["properties"]["DisableLocalAuth"] is True
    assert workspace["properties"]["features"]["disableLocalAuth"] is True


def test_the_app_ships_the_application_insights_distro_pinned() -> None:
    from tests.infra_model import REPO
    pins = dict(line.split("==") for line in (REPO / "requirements.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert re.fullmatch(r"\d+\.\d+\.\d+", pins["azure-monitor-opentelemetry"])
