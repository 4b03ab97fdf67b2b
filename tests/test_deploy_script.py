"""infra/deploy.sh against a stand-in `az` (tests/fake_az.py): the result key never shows, re-runs keep what an
operator set, and the script stops before deploying code when something is wrong."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "infra" / "deploy.sh"


@dataclass
class Run:
    code: int
    output: str
    calls: list[dict[str, Any]]


class FakeAzure:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir()
        self.tmp = root / "tmp"
        self.tmp.mkdir()
        self.state_path = root / "state.json"
        self.log_path = root / "calls.jsonl"
        self.state_path.write_text(json.dumps({"providers": {}}))
        az = self.bin / "az"
        az.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{REPO / "tests" / "fake_az.py"}" "$@"\n')
        az.chmod(0o755)
        self.curl_status = "401"

    @property
    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = json.loads(self.state_path.read_text())
        return state

    def update(self, **changes: Any) -> None:
        self.state_path.write_text(json.dumps({**self.state, **changes}))

    def deploy(self, *args: str) -> Run:
        curl = self.bin / "curl"
        curl.write_text(f"#!/bin/sh\nprintf '{self.curl_status}'\n")
        curl.chmod(0o755)
        self.log_path.write_text("")
        env = {**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}", "TMPDIR": str(self.tmp),
               "FAKE_AZ_STATE": str(self.state_path), "FAKE_AZ_LOG": str(self.log_path)}
        result = subprocess.run(["bash", str(SCRIPT), "-l", "westeurope", *args], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=120, check=False)
        calls = [json.loads(line) for line in self.log_path.read_text().splitlines()]
        return Run(result.returncode, result.stdout + result.stderr, calls)


@pytest.fixture
def azure(tmp_path: Path) -> FakeAzure:
    return FakeAzure(tmp_path)


def _calls(run: Run, *words: str) -> list[dict[str, Any]]:
    return [c for c in run.calls if [a for a in c["args"] if not a.startswith("-")][:len(words)] == list(words)]


def test_a_first_deployment_generates_the_result_key_without_ever_showing_it(azure: FakeAzure) -> None:
    run = azure.deploy()
    assert run.code == 0, run.output
    key = azure.state["secrets"]["result-key"]
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    assert key not in run.output
    assert all(key not in " ".join(c["args"]) for c in run.calls)  # never on a command line
    (secret_set,) = _calls(run, "keyvault", "secret", "set")
    assert secret_set["file_mode"] == "0o600"
    assert "--output" in secret_set["args"] and "none" in secret_set["args"]
    assert not Path(secret_set["file"]).exists() and list(azure.tmp.iterdir()) == []  # nothing left behind
    assert {c["args"][c["args"].index("--namespace") + 1] for c in _calls(run, "provider", "register")} >= {
        "Microsoft.Web", "Microsoft.KeyVault", "Microsoft.Insights", "Microsoft.OperationalInsights"}
    (deployment,) = _calls(run, "deployment", "sub", "create")
    assert deployment["parameters"]["appExists"] is False
    assert deployment["parameters"]["deployerPrincipalId"] == "deployer-object-id"
    assert _calls(run, "functionapp", "deployment", "source", "config-zip")
    assert any("configreferences/appsettings/refresh" in " ".join(c["args"]) for c in _calls(run, "rest"))


def test_a_second_run_keeps_the_key_and_every_setting_an_operator_made(azure: FakeAzure, tmp_path: Path) -> None:
    assert azure.deploy().code == 0
    key = azure.state["secrets"]["result-key"]
    # the operator: a schedule and a secret variable in their parameters file, a setting added in the portal
    params = json.loads((REPO / "infra" / "main.parameters.json").read_text())
    params["parameters"]["scheduledInitSchedule"]["value"] = "0 0 6 * * *"
    params["parameters"]["secretVariables"]["value"] = {"___ApiToken": "api-token"}
    operator_file = tmp_path / "operator.parameters.json"
    operator_file.write_text(json.dumps(params))
    azure.update(secrets={**azure.state["secrets"], "api-token": "token-value"},
                 settings={**azure.state["settings"], "OPERATOR_NOTE": "from the portal"})

    run = azure.deploy("-f", str(operator_file))
    assert run.code == 0, run.output
    settings = azure.state["settings"]
    assert azure.state["secrets"]["result-key"] == key and not _calls(run, "keyvault", "secret", "set")
    assert settings["OPERATOR_NOTE"] == "from the portal"
    assert settings["SCHEDULED_INIT_SCHEDULE"] == "0 0 6 * * *"
    assert json.loads(settings["SECRET_VARIABLES"]) == {"___ApiToken": "SECRET_API_TOKEN"}
    assert "token-value" not in json.dumps(settings) + run.output
    (deployment,) = _calls(run, "deployment", "sub", "create")
    assert deployment["parameters"]["appExists"] is True

    before = azure.state["settings"]
    again = azure.deploy("-f", str(operator_file))
    assert again.code == 0, again.output
    assert azure.state["settings"] == before  # a third run changes nothing


def test_infra_only_keeps_the_image_the_app_runs_and_deploys_no_code(azure: FakeAzure) -> None:
    assert azure.deploy("-t", "abc1234").code == 0
    run = azure.deploy("-i")
    assert run.code == 0, run.output
    assert azure.state["settings"]["DEFAULT_IMAGE"].endswith(":abc1234")
    assert not _calls(run, "functionapp", "deployment") and not _calls(run, "acr") and not _calls(run, "ts")


def test_a_secret_variable_missing_from_the_vault_stops_before_code_is_deployed(
        azure: FakeAzure, tmp_path: Path) -> None:
    params = json.loads((REPO / "infra" / "main.parameters.json").read_text())
    params["parameters"]["secretVariables"]["value"] = {"___ApiToken": "api-token"}
    operator_file = tmp_path / "operator.parameters.json"
    operator_file.write_text(json.dumps(params))
    run = azure.deploy("-f", str(operator_file))
    assert run.code == 1
    assert "api-token" in run.output and "not in" in run.output
    assert not _calls(run, "functionapp", "deployment")


def test_an_app_on_the_old_consumption_plan_is_not_touched(azure: FakeAzure) -> None:
    azure.update(app="loadme-func-old", plan_tier="Dynamic", settings={"FUNCTIONS_WORKER_RUNTIME": "python"})
    run = azure.deploy()
    assert run.code == 1
    assert "Moving from Linux Consumption" in run.output
    assert not _calls(run, "deployment", "sub", "create")


@pytest.mark.parametrize(("status", "code"), [("401", 0), ("200", 1)])
def test_with_entra_authentication_on_a_request_without_a_token_must_get_401(
        azure: FakeAzure, tmp_path: Path, status: str, code: int) -> None:
    params = json.loads((REPO / "infra" / "main.parameters.json").read_text())
    params["parameters"]["entraAuthEnabled"]["value"] = True
    params["parameters"]["entraClientId"]["value"] = "11111111-2222-3333-4444-555555555555"
    operator_file = tmp_path / "operator.parameters.json"
    operator_file.write_text(json.dumps(params))
    azure.curl_status = status
    run = azure.deploy("-f", str(operator_file))
    assert run.code == code, run.output


def test_the_script_never_puts_a_secret_on_a_command_line() -> None:
    text = SCRIPT.read_text()
    assert "--value" not in text
    for line in text.splitlines():
        if "keyvault secret set" in line:
            assert "--file" in text[text.index(line):].split("\n\n")[0]
    assert "RESULT_KEY=" not in text and "appsettings set" not in text
    assert stat.S_IMODE(SCRIPT.stat().st_mode) & 0o111  # executable
