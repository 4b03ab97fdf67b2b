"""Contract between the code and infra/main.json: every setting the code requires is set by the
template, every queue/table/container the code uses is created by it, and it validates offline."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from loadme.errors import SettingsError
from loadme.names import TRIGGER_QUEUES, poison_queue
from loadme.settings import Settings

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MAIN = json.loads((REPO / "infra" / "main.json").read_text())
CODE_REQUIRES_FOR_ACI = {"AzureWebJobsStorage", "EXECUTOR", "RESULT_KEY", "DEFAULT_IMAGE", "AZURE_SUBSCRIPTION_ID",
                         "DEPLOYMENT_RESOURCE_GROUP", "ACI_LOCATION", "TEMPLATE_SPEC_VERSION_ID",
                         "CONTAINER_IDENTITY_ID", "CONTAINER_IDENTITY_CLIENT_ID", "REGISTRY_SERVER"}


def _resources(template: dict[str, Any]) -> list[dict[str, Any]]:
    """Every resource, nested deployments' inline templates included."""
    found = []
    for resource in template.get("resources", []):
        found.append(resource)
        inner = resource.get("properties", {}).get("template")
        if inner:
            found += _resources(inner)
    return found


def _management_template(template: dict[str, Any]) -> dict[str, Any]:
    return next(r["properties"]["template"] for r in template["resources"]
                if r["type"] == "Microsoft.Resources/deployments" and r["name"] == "loadme-management")


def _parameter_value(name: str) -> str:
    """What a passed-through parameter is by default ('k' * 40 for the result key, which has none)."""
    declaration = MAIN["parameters"][name]
    default = declaration.get("defaultValue")
    if default is None:
        return "k" * 40
    return str(default) if not str(default).startswith("[") else f"placeholder-{name}"


def app_settings(template: dict[str, Any]) -> dict[str, str]:
    """The Function App's app settings, ARM expressions replaced by values of the right shape."""
    site = next(r for r in _resources(template) if r["type"] == "Microsoft.Web/sites")
    env = {}
    for item in site["properties"]["siteConfig"]["appSettings"]:
        value = item["value"]
        if isinstance(value, str) and (match := re.fullmatch(r"\[parameters\('(\w+)'\)\]", value)):
            value = _parameter_value(match.group(1))
        elif isinstance(value, str) and value.startswith("["):
            value = f"placeholder-{item['name'].lower()}"
        env[item["name"]] = value
    return env


def test_the_template_sets_every_setting_the_code_requires() -> None:
    settings = Settings.from_mapping(app_settings(MAIN))
    assert settings.executor == "aci" and settings.aci is not None
    assert settings.result_auth == "identity"  # the containers post with their identity: no SAS


def test_the_settings_object_requires_what_the_contract_names() -> None:
    env = app_settings(MAIN)
    required = set()
    for name in env:
        try:
            Settings.from_mapping({k: v for k, v in env.items() if k != name})
        except SettingsError as err:
            assert any(p.startswith(name) for p in err.problems), err.problems
            required.add(name)
    assert required == CODE_REQUIRES_FOR_ACI


@pytest.mark.parametrize("removed", sorted(CODE_REQUIRES_FOR_ACI))
def test_removing_a_required_setting_from_the_template_breaks_the_contract(removed: str) -> None:
    broken = copy.deepcopy(MAIN)
    site = next(r for r in _resources(broken) if r["type"] == "Microsoft.Web/sites")
    site["properties"]["siteConfig"]["appSettings"] = [
        s for s in site["properties"]["siteConfig"]["appSettings"] if s["name"] != removed]
    with pytest.raises(SettingsError) as err:
        Settings.from_mapping(app_settings(broken))
    assert any(p.startswith(removed) for p in err.value.problems)


def test_every_queue_table_and_container_the_code_uses_is_created() -> None:
    inner = _management_template(MAIN)
    names = [str(r["name"]) for r in _resources(inner)]
    queue_names = set(re.findall(r"/default/([a-z0-9-]+)'", " ".join(names)))  # literal child names
    for queue in TRIGGER_QUEUES:
        assert queue in queue_names and poison_queue(queue) in queue_names
    env = app_settings(MAIN)
    settings = Settings.from_mapping(env)
    tables = [r for r in _resources(inner) if r["type"].endswith("tableServices/tables")]
    containers = [r for r in _resources(inner) if r["type"].endswith("blobServices/containers")]
    assert len(tables) == 1 and "parameters('journalTable')" in tables[0]["name"]
    assert settings.journal_table == MAIN["parameters"]["journalTable"]["defaultValue"]
    assert len(containers) == 1 and inner["variables"]["logsContainerPath"].endswith("parameters('logsContainer'))]")
    assert settings.logs_container == MAIN["parameters"]["logsContainer"]["defaultValue"]


def test_infra_templates_validate_offline() -> None:
    validator = SHARED / "arm" / "armvalidate.py"
    assert validator.exists(), f"{validator} is missing: CI runs with ../shared beside the checkout"
    templates = sorted(str(p) for p in (REPO / "infra").glob("*.json") if not p.name.endswith(".parameters.json"))
    result = subprocess.run([sys.executable, str(validator), "--strict", "--relax", *templates],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_secret_has_a_default_or_an_output() -> None:
    for template in (MAIN, _management_template(MAIN)):
        for name, declaration in template["parameters"].items():
            if declaration["type"].lower() in ("securestring", "secureobject"):
                assert "defaultValue" not in declaration, name
        assert "resultKey" not in json.dumps(template.get("outputs", {}))
