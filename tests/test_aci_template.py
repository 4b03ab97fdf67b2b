"""templates/aci.json filled with real per-run values round-trips through the SDK's model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from azure.mgmt.containerinstance.models import ContainerGroup

from loadme.executors.aci_parameters import group_body, template_parameters
from loadme.names import OWNER_TAG
from tests.arm_expressions import evaluate, fill
from tests.support import sample_aci_settings, sample_container_spec

TEMPLATE = json.loads((Path(__file__).resolve().parents[1] / "templates" / "aci.json").read_text())
IDENTITY = ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/mgmt/providers/"
            "Microsoft.ManagedIdentity/userAssignedIdentities/loadme-containers")


def _group_body(parameters: dict[str, Any]) -> dict[str, Any]:
    [resource] = TEMPLATE["resources"]
    resolved = evaluate(resource, fill(TEMPLATE, parameters))
    return {k: v for k, v in resolved.items() if k in ("name", "location", "tags", "identity", "properties")}


def _strip_nones(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_nones(v) for k, v in node.items() if v is not None}
    if isinstance(node, list):
        return [_strip_nones(v) for v in node]
    return node


@pytest.mark.parametrize("registry_auth", ["identity", "admin"])
def test_filled_template_round_trips_through_the_sdk_model(registry_auth: str) -> None:
    spec = sample_container_spec()
    body = _group_body(template_parameters(spec, sample_aci_settings(registry_auth), "acr-user", "acr-password"))
    round_tripped = _strip_nones(ContainerGroup.deserialize(body).serialize(keep_readonly=True))
    assert round_tripped == body  # no key lost, none changed

    properties = body["properties"]
    assert (properties["osType"], properties["restartPolicy"]) == ("Linux", "Never")
    assert body["identity"] == {"type": "UserAssigned", "userAssignedIdentities": {IDENTITY: {}}}
    container = properties["containers"][0]["properties"]
    assert container["command"] == ["python", "/app/runner.py", "python", "jobs/demo_job.py"]
    assert container["resources"]["requests"] == {"cpu": 1.0, "memoryInGB": 1.5}
    env = {e["name"]: e for e in container["environmentVariables"]}
    assert env["___Name"] == {"name": "___Name", "value": "Ada"}
    assert env["___ApiToken"] == {"name": "___ApiToken", "secureValue": "hunter2"}
    assert env["LOADME_RESULT_TOKEN"] == {"name": "LOADME_RESULT_TOKEN", "secureValue": "token-value"}
    assert body["tags"][OWNER_TAG] == "loadme" and body["tags"]["loadme-run-id"] == spec.run_id
    credentials = properties["imageRegistryCredentials"]
    if registry_auth == "identity":
        assert credentials == [{"server": "loadmeacr.azurecr.io", "identity": IDENTITY}]
    else:
        assert credentials == [{"server": "loadmeacr.azurecr.io", "username": "acr-user", "password": "acr-password"}]


def test_images_elsewhere_get_no_registry_credentials() -> None:
    parameters = template_parameters(sample_container_spec(image="python:3.13-slim"), sample_aci_settings("admin"),
                                     "user", "password")
    assert "registryPassword" not in parameters
    assert _group_body(parameters)["properties"]["imageRegistryCredentials"] == []


def test_secure_values_travel_in_a_secure_parameter() -> None:
    assert TEMPLATE["parameters"]["environment"]["type"] == "secureObject"
    assert TEMPLATE["parameters"]["registryPassword"]["type"] == "securestring"


@pytest.mark.parametrize("registry_auth", ["identity", "admin"])
def test_direct_mode_body_equals_what_the_template_makes(registry_auth: str) -> None:
    parameters = template_parameters(sample_container_spec(), sample_aci_settings(registry_auth), "acr-user",
                                     "acr-password")
    template_body = _group_body(parameters)
    del template_body["name"]
    assert group_body(parameters) == template_body
