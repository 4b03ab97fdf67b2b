"""Parameters for `templates/aci.json` (the template spec) from a container spec. Pure, no SDK.

The same values build the direct-mode `ContainerGroup`, so both deploy modes create the same group.
"""

from __future__ import annotations

from typing import Any

from loadme.executors.base import ContainerSpec
from loadme.names import OWNER_TAG, OWNER_TAG_VALUE
from loadme.settings import AciSettings

# The job's command runs under the image's runner, which posts the result.
RUNNER_ARGV = ("python", "/app/runner.py")
TAG_DEADLINE = "loadme-deadline"  # the run, step, item and attempt tags are loadme.slot's
CONTAINER_NAME = "job"


def group_tags(spec: ContainerSpec) -> dict[str, str]:
    """The tags that mark a group as this app's and tie it to its slot (loadme.slot.Slot.tags) and deadline."""
    return {OWNER_TAG: OWNER_TAG_VALUE, **spec.slot.tags, TAG_DEADLINE: spec.deadline}


def template_parameters(
    spec: ContainerSpec, aci: AciSettings, registry_username: str = "", registry_password: str = ""
) -> dict[str, Any]:
    """The template's parameter values for `spec` (ARM `{"name": {"value": ...}}` shape).

    Registry credentials go only to images on the configured registry; the admin username and
    password only when `registry_auth` is `admin`.
    """
    on_registry = bool(aci.registry_server) and spec.image.startswith(aci.registry_server + "/")
    values: dict[str, Any] = {
        "containerGroupName": spec.name,
        "location": aci.location,
        "image": spec.image,
        "command": [*RUNNER_ARGV, *spec.command],
        "cpu": str(aci.cpu),
        "memoryInGB": str(aci.memory_gb),
        "environment": {"items": [dict(item) for item in spec.environment]},
        "identityId": aci.identity_id,
        "registryServer": aci.registry_server if on_registry else "",
        "registryAuth": aci.registry_auth,
        "tags": group_tags(spec),
    }
    if on_registry and aci.registry_auth == "admin":
        values["registryUsername"] = registry_username
        values["registryPassword"] = registry_password
    return {name: {"value": value} for name, value in values.items()}


def escaped_for_arm(parameters: dict[str, Any]) -> dict[str, Any]:
    """Template-spec parameters with every string inside an object or array value (the command, the
    environment, the tags) that starts with `[` and ends with `]` escaped as `[[...]`.

    ARM reads such a string nested in a parameter value as a template expression: it validates it
    (Azure/bicep#9173: a value like `[a-z]` fails the deployment) and may evaluate it (Azure/bicep#18658),
    so a variable or command argument could run ARM functions. A leading `[[` is ARM's escape: "To
    have a literal string start with a left bracket [ and end with a right bracket ], but not have it
    interpreted as an expression, add an extra bracket to start the string with [["
    (learn.microsoft.com/azure/azure-resource-manager/templates/template-expressions#escape-characters).
    Top-level string values are not read so (#18658's `safeInput`) and stay as they are; direct mode
    sends the unescaped values (`group_body`).
    """
    return {name: {"value": _escaped(wrapped["value"], nested=False)} for name, wrapped in parameters.items()}


def _escaped(value: Any, nested: bool) -> Any:
    if isinstance(value, str):
        return "[" + value if nested and value.startswith("[") and value.endswith("]") else value
    if isinstance(value, dict):
        return {key: _escaped(item, nested=True) for key, item in value.items()}
    if isinstance(value, list):
        return [_escaped(item, nested=True) for item in value]
    return value


def group_body(parameters: dict[str, Any]) -> dict[str, Any]:
    """The container group REST body the template makes from `parameters` (for direct mode).

    Kept equal to `templates/aci.json`'s resource by a test, so both modes create the same group.
    """
    p = {name: wrapped["value"] for name, wrapped in parameters.items()}
    server, auth = p["registryServer"], p["registryAuth"]
    if not server:
        credentials: list[dict[str, str]] = []
    elif auth == "admin":
        credentials = [{"server": server, "username": p.get("registryUsername", ""),
                        "password": p.get("registryPassword", "")}]
    else:
        credentials = [{"server": server, "identity": p["identityId"]}]
    return {
        "location": p["location"],
        "tags": p["tags"],
        "identity": {"type": "UserAssigned", "userAssignedIdentities": {p["identityId"]: {}}},
        "properties": {
            "osType": "Linux",
            "restartPolicy": "Never",
            "sku": "Standard",
            "imageRegistryCredentials": credentials,
            "containers": [{
                "name": CONTAINER_NAME,
                "properties": {
                    "image": p["image"],
                    "command": p["command"],
                    "environmentVariables": p["environment"]["items"],
                    "resources": {"requests": {"cpu": float(p["cpu"]), "memoryInGB": float(p["memoryInGB"])}},
                },
            }],
        },
    }
