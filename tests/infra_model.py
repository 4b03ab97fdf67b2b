"""infra/main.json evaluated offline: its parameters, the management template and the app settings ARM would
apply, with stand-ins for what only Azure knows (identity client ids, the App Insights connection string)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.arm_expressions import Evaluator, fill

REPO = Path(__file__).resolve().parents[1]
MAIN_PATH = REPO / "infra" / "main.json"
PARAMETERS_PATH = REPO / "infra" / "main.parameters.json"
MAIN: dict[str, Any] = json.loads(MAIN_PATH.read_text())
PARAMETERS_FILE: dict[str, Any] = json.loads(PARAMETERS_PATH.read_text())
MANAGEMENT_DEPLOYMENT = "loadme-management"


def resources(template: dict[str, Any]) -> list[dict[str, Any]]:
    """Every resource: nested deployments' inline templates and nested child resources included."""
    found = []
    for resource in template.get("resources", []):
        found.append(resource)
        found += resources({"resources": resource.get("resources", [])})
        properties = resource.get("properties")
        inner = properties.get("template") if isinstance(properties, dict) else None
        if isinstance(inner, dict):
            found += resources(inner)
    return found


def management_deployment(template: dict[str, Any] = MAIN) -> dict[str, Any]:
    return next(r for r in template["resources"]
                if r["type"] == "Microsoft.Resources/deployments" and r["name"] == MANAGEMENT_DEPLOYMENT)


def management(template: dict[str, Any] = MAIN) -> dict[str, Any]:
    """The management resource group's template (storage, vault, app, monitoring)."""
    inner: dict[str, Any] = management_deployment(template)["properties"]["template"]
    return inner


def site(template: dict[str, Any] = MAIN) -> dict[str, Any]:
    return next(r for r in management(template)["resources"] if r["type"] == "Microsoft.Web/sites")


def site_child(name: str, template: dict[str, Any] = MAIN) -> dict[str, Any]:
    return next(r for r in site(template).get("resources", []) if r["name"] == name)


def client_id(identity_name: str) -> str:
    return f"client-id-of-{identity_name}"


CONNECTION_STRING = ("InstrumentationKey=00000000-0000-0000-0000-00000000c0de;"
                     "IngestionEndpoint=https://westeurope-5.in.applicationinsights.azure.com/;"
                     "ApplicationId=00000000-0000-0000-0000-0000000000a1")


def reference(resource_id: str, *_: Any) -> dict[str, Any]:
    """What `reference()` returns in Azure, for the resources the template reads."""
    kind, name = resource_id.split("/providers/", 1)[1].rsplit("/", 2)[-2:]
    if kind == "userAssignedIdentities":
        return {"clientId": client_id(name), "principalId": f"principal-id-of-{name}"}
    if kind == "components":
        return {"ConnectionString": CONNECTION_STRING}
    if kind == "storageAccounts":
        return {"primaryEndpoints": {"blob": f"https://{name}.blob.core.windows.net/"}}
    if kind == "sites":
        return {"defaultHostName": f"{name}.azurewebsites.net"}
    raise AssertionError(f"reference() of {resource_id} is not expected")


def file_values(parameters_file: dict[str, Any] = PARAMETERS_FILE) -> dict[str, Any]:
    return {name: wrapped["value"] for name, wrapped in parameters_file["parameters"].items()}


def outer_parameters(values: dict[str, Any] | None = None) -> dict[str, Any]:
    """infra/main.json's parameters: its defaults, then `values` (as `az deployment sub create` merges them)."""
    return fill(MAIN, {name: {"value": value} for name, value in (values or {}).items()})


def _list_app_settings(existing_settings: dict[str, str] | None) -> Callable[..., dict[str, Any]]:
    """`list()` of the app settings, as ARM answers it: only ever called when the app exists."""
    def list_(resource_id: str, api_version: str) -> dict[str, Any]:
        assert resource_id.endswith("/config/appsettings"), resource_id
        assert existing_settings is not None, "list() of the app settings on a first deployment"
        return {"properties": dict(existing_settings)}

    return list_


def management_parameters(values: dict[str, Any] | None = None,
                          existing_settings: dict[str, str] | None = None) -> dict[str, Any]:
    """The parameters the management deployment receives (the outer template reads the current settings)."""
    outer = outer_parameters(values)
    evaluator = Evaluator(outer, MAIN.get("variables", {}), resource_group="",
                          list_=_list_app_settings(existing_settings))
    passed = management_deployment()["properties"]["parameters"]
    return {name: evaluator.evaluate(wrapped["value"]) for name, wrapped in passed.items()}


def evaluator(values: dict[str, Any] | None = None, existing_settings: dict[str, str] | None = None) -> Evaluator:
    """An evaluator of the management template; the parent's `list()` of the app settings answers
    `existing_settings`, and the management template itself may call no `list()`."""
    return Evaluator(management_parameters(values, existing_settings), management().get("variables", {}),
                     reference=reference)


def app_settings(values: dict[str, Any] | None = None,
                 existing_settings: dict[str, str] | None = None) -> dict[str, str]:
    """The app settings ARM applies: `values` are deployment parameters; with `existing_settings` the app exists."""
    values = dict(values or {})
    if existing_settings is not None:
        values["appExists"] = True
    settings: dict[str, str] = evaluator(values, existing_settings).evaluate(site_child("appsettings")["properties"])
    return settings


def deployment_outputs(values: dict[str, Any] | None = None,
                       existing_settings: dict[str, str] | None = None) -> dict[str, Any]:
    """The outputs `az deployment sub create` returns (management outputs passed up by name)."""
    inner = evaluator(values, existing_settings)
    management_outputs = {name: inner.evaluate(o["value"]) for name, o in management()["outputs"].items()}
    outer = outer_parameters(values)
    found = {}
    for name, output in MAIN["outputs"].items():
        expression = output["value"]
        if ".outputs." in expression:
            found[name] = {"type": output["type"], "value": management_outputs[expression.split(".outputs.")[1]
                                                                              .split(".")[0]]}
        else:
            found[name] = {"type": output["type"], "value": Evaluator(outer).evaluate(expression)}
    return found


def as_the_app_sees_them(settings: dict[str, str]) -> dict[str, str]:
    """App settings after the platform resolved the Key Vault references (a stand-in secret each)."""
    resolved = {}
    for name, value in settings.items():
        if value.startswith("@Microsoft.KeyVault(SecretUri="):
            secret = value.rstrip("/)").rsplit("/", 1)[-1]
            value = f"resolved-secret-{secret}-0123456789abcdefghij"
        resolved[name] = value
    return resolved
