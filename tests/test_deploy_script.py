"""infra/deploy.sh against a stand-in `az` (tests/fake_az.py): the result key never shows, re-runs keep what an
operator set, and the script stops before deploying code when something is wrong."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fake_az import FUNCTION_KEY
from tests.infra_model import deployment_outputs

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "infra" / "deploy.sh"


@functools.cache
def _python3() -> str | None:
    """The interpreter `python3` on PATH runs, past any launcher (a pyenv shim costs ~0.1 s a call)."""
    if shutil.which("python3") is None:
        return None
    found = subprocess.run(["python3", "-c", "import sys; print(sys.executable)"], capture_output=True,
                           text=True, check=True, timeout=60)
    return found.stdout.strip()


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
        # A run calls az a few dozen times and python3 about ten: each starts isolated (-I) and without
        # site-packages (-S), which skips most of an interpreter's start-up; deploy.sh's own python3 snippets
        # must then run on the bare standard library, as on any machine that has a python3.
        az.write_text(f'#!/bin/sh\nexec "{sys.executable}" -I -S "{REPO / "tests" / "fake_az.py"}" "$@"\n')
        az.chmod(0o755)
        python3 = _python3()
        if python3 is not None:
            shim = self.bin / "python3"
            shim.write_text(f'#!/bin/sh\nexec "{python3}" -I -S "$@"\n')
            shim.chmod(0o755)
        # what the app answers a request that carries the function key (and no token); without the key every
        # route answers 401 from the Functions host (http_auth_level=FUNCTION), whatever EasyAuth does
        self.curl_status = "401"
        self.curl_log = root / "curl.log"

    @property
    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = json.loads(self.state_path.read_text())
        return state

    def update(self, **changes: Any) -> None:
        self.state_path.write_text(json.dumps({**self.state, **changes}))

    def deploy(self, *args: str, env: dict[str, str] | None = None) -> Run:
        curl = self.bin / "curl"
        curl.write_text(
            "#!/bin/sh\n"
            f'echo "$*" >>"{self.curl_log}"\n'
            'header=""\n'
            'for arg in "$@"; do case "$arg" in @*) header="${arg#@}" ;; esac; done\n'
            f'if [ -n "$header" ] && grep -qx "x-functions-key: {FUNCTION_KEY}" "$header"; then\n'
            f"  printf '{self.curl_status}'\n"
            "else\n"
            "  printf '401'\n"
            "fi\n")
        curl.chmod(0o755)
        self.log_path.write_text("")
        self.curl_log.write_text("")
        env = {**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}", "TMPDIR": str(self.tmp),
               "FAKE_AZ_STATE": str(self.state_path), "FAKE_AZ_LOG": str(self.log_path),
               "LOADME_RETRY_BACKOFF_SECONDS": "0", **(env or {})}
        result = subprocess.run(["bash", str(SCRIPT), "-l", "westeurope", *args], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=120, check=False)
        calls = [json.loads(line) for line in self.log_path.read_text().splitlines()]
        return Run(result.returncode, result.stdout + result.stderr, calls)


@pytest.fixture
def azure(tmp_path: Path) -> FakeAzure:
    return FakeAzure(tmp_path)


@dataclass
class Deployed:
    azure: FakeAzure
    run: Run
    state: dict[str, Any]  # the fake Azure as the run left it


@pytest.fixture(scope="module")
def first_deployment(tmp_path_factory: pytest.TempPathFactory) -> Deployed:
    """One plain first deployment (`deploy.sh -l westeurope` on an empty subscription), run once for the tests
    that assert things about it or go on from it: a run costs a second of CPU."""
    azure = FakeAzure(tmp_path_factory.mktemp("first-deployment"))
    run = azure.deploy()
    return Deployed(azure, run, azure.state)


@pytest.fixture
def deployed(first_deployment: Deployed, tmp_path: Path) -> FakeAzure:
    """A fake Azure of this test's own in the state the first deployment left (all of it is in its state file)."""
    assert first_deployment.run.code == 0, first_deployment.run.output
    root = tmp_path / "azure"
    root.mkdir()
    azure = FakeAzure(root)
    azure.update(**first_deployment.state)
    return azure


def _calls(run: Run, *words: str) -> list[dict[str, Any]]:
    return [c for c in run.calls if [a for a in c["args"] if not a.startswith("-")][:len(words)] == list(words)]


def test_a_first_deployment_generates_the_result_key_without_ever_showing_it(first_deployment: Deployed) -> None:
    azure, run = first_deployment.azure, first_deployment.run
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


def test_a_second_run_keeps_the_key_and_every_setting_an_operator_made(deployed: FakeAzure, tmp_path: Path) -> None:
    azure = deployed
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
    assert not _calls(run, "functionapp", "deployment") and not _calls(run, "acr")
    assert not _calls(run, "ts", "create") and _calls(run, "ts", "show")  # checked, not republished


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


def _operator_file(tmp_path: Path, **values: Any) -> Path:
    params = json.loads((REPO / "infra" / "main.parameters.json").read_text())
    for name, value in values.items():
        params["parameters"][name] = {"value": value}
    operator_file = tmp_path / "operator.parameters.json"
    operator_file.write_text(json.dumps(params))
    return operator_file


def test_secret_images_bind_the_variables_they_name_in_the_deployed_settings(azure: FakeAzure, tmp_path: Path) -> None:
    azure.update(secrets={"api-token": "token-value", "db-password": "password-value"})
    images = ["myacr.azurecr.io/jobs/etl", "myacr.azurecr.io/jobs/"]
    run = azure.deploy("-f", str(_operator_file(
        tmp_path, secretVariables={"___ApiToken": "api-token", "___DbPassword": "db-password"},
        secretImages={"___DbPassword": images})))
    assert run.code == 0, run.output
    (deployment,) = _calls(run, "deployment", "sub", "create")
    assert deployment["parameters"]["secretImages"] == {"___DbPassword": images}
    assert json.loads(azure.state["settings"]["SECRET_VARIABLES"]) == {
        "___ApiToken": "SECRET_API_TOKEN", "___DbPassword": {"setting": "SECRET_DB_PASSWORD", "images": images}}


@pytest.mark.parametrize(("secret_images", "message"), [
    ({"___DbPasword": ["myacr.azurecr.io/jobs/"]}, "___DbPasword is not a key of secretVariables"),
    ({"___dbpassword": ["myacr.azurecr.io/jobs/"]}, "case-sensitive: did you mean ___DbPassword?"),
    ({"___DbPassword": []}, "___DbPassword must be a non-empty array of image strings"),
    ({"___DbPassword": "myacr.azurecr.io/jobs/"}, "___DbPassword must be a non-empty array of image strings"),
    ({"___DbPassword": ["myacr.azurecr.io/jobs/", " "]}, "___DbPassword must be a non-empty array of image strings"),
    ({"___DbPassword": ["myacr.azurecr.io/jobs/", 7]}, "___DbPassword must be a non-empty array of image strings"),
    (["___DbPassword"], "secretImages must be an object"),
])
def test_secret_images_that_do_not_bind_a_secret_variable_are_refused_before_anything_is_created(
        azure: FakeAzure, tmp_path: Path, secret_images: Any, message: str) -> None:
    run = azure.deploy("-f", str(_operator_file(tmp_path, secretVariables={"___DbPassword": "db-password"},
                                                secretImages=secret_images)))
    assert run.code == 2, run.output
    assert message in run.output and "nothing was deployed" in run.output
    assert run.calls == []  # refused before the first az call: not even the login is looked at


def test_an_app_on_the_old_consumption_plan_is_not_touched(azure: FakeAzure) -> None:
    azure.update(app="loadme-func-old", plan_tier="Dynamic", settings={"FUNCTIONS_WORKER_RUNTIME": "python"})
    run = azure.deploy()
    assert run.code == 1
    assert "Moving from Linux Consumption" in run.output
    assert not _calls(run, "deployment", "sub", "create")


def _entra_parameters(tmp_path: Path) -> Path:
    params = json.loads((REPO / "infra" / "main.parameters.json").read_text())
    params["parameters"]["entraAuthEnabled"]["value"] = True
    params["parameters"]["entraClientId"]["value"] = "11111111-2222-3333-4444-555555555555"
    operator_file = tmp_path / "operator.parameters.json"
    operator_file.write_text(json.dumps(params))
    return operator_file


@pytest.mark.parametrize(("status", "code"), [("401", 0), ("200", 1)])
def test_with_entra_on_a_request_with_a_function_key_and_no_token_must_get_401(
        azure: FakeAzure, tmp_path: Path, status: str, code: int) -> None:
    """F6: without a key the Functions host answers 401 whether or not EasyAuth enforces anything; only a request
    with a valid key and no token tells. A 200 then means authentication is not applied."""
    azure.curl_status = status
    run = azure.deploy("-f", str(_entra_parameters(tmp_path)))
    assert run.code == code, run.output
    if code:
        assert "not enforced" in run.output
    (request,) = azure.curl_log.read_text().splitlines()
    assert "Authorization" not in request and "/api/status" in request
    # the key goes from az to a 0600 file curl reads its header from: never on a command line, never printed
    assert FUNCTION_KEY not in request and FUNCTION_KEY not in run.output
    assert list(azure.tmp.iterdir()) == []


def test_with_entra_on_the_api_requires_an_assignment(azure: FakeAzure, tmp_path: Path) -> None:
    """L6: without 'assignment required' every principal of the tenant can get a token for the API."""
    run = azure.deploy("-f", str(_entra_parameters(tmp_path)))
    assert run.code == 0, run.output
    (update,) = _calls(run, "ad", "sp", "update")
    assert update["args"][update["args"].index("--id") + 1] == "11111111-2222-3333-4444-555555555555"
    assert "appRoleAssignmentRequired=true" in update["args"]
    assert not _calls(azure.deploy(), "ad", "sp", "update")  # Entra off: the directory is not touched


def test_the_code_upload_is_retried_while_the_new_storage_role_is_refused(azure: FakeAzure) -> None:
    """F10: the first publish to a new app can answer 400/403 until the app's storage role takes effect."""
    azure.update(upload_failures=[403, 400])
    run = azure.deploy()
    assert run.code == 0, run.output
    assert len(_calls(run, "functionapp", "deployment", "source", "config-zip")) == 3
    assert azure.state["uploads"] == 1 and run.output.count("retrying") == 2


def test_an_upload_refused_for_another_reason_is_not_retried(azure: FakeAzure) -> None:
    azure.update(upload_failures=[500])
    run = azure.deploy()
    assert run.code == 1 and "code upload failed" in run.output
    assert len(_calls(run, "functionapp", "deployment", "source", "config-zip")) == 1


def test_an_upload_that_never_finishes_fails_under_its_timeout(azure: FakeAzure) -> None:
    azure.update(upload_failures=["hang"])  # the fake sleeps 60 s; the script's timeout is 2 s
    run = azure.deploy(env={"LOADME_UPLOAD_TIMEOUT_SECONDS": "2"})
    assert run.code == 1 and "did not finish within 2s" in run.output, run.output


def test_the_template_spec_version_is_published_before_the_app_points_at_it(azure: FakeAzure) -> None:
    """F12: step 2 sets TEMPLATE_SPEC_VERSION_ID and restarts the app; the version must exist by then."""
    run = azure.deploy("-v", "2.0")
    assert run.code == 0, run.output
    order = [" ".join(c["args"][:3]) for c in run.calls]
    assert order.index("ts create --resource-group") < order.index("deployment sub create")
    (create,) = _calls(run, "ts", "create")
    assert create["args"][create["args"].index("--name") + 1] == deployment_outputs()["templateSpecName"]["value"]
    assert azure.state["settings"]["TEMPLATE_SPEC_VERSION_ID"].endswith("/templateSpecs/loadme-aci/versions/2.0")


def test_infra_only_with_a_spec_version_that_is_not_published_is_refused(deployed: FakeAzure) -> None:
    azure = deployed  # the first deployment published 1.0
    run = azure.deploy("-i", "-v", "2.0")
    assert run.code == 2 and "not published" in run.output
    assert not _calls(run, "deployment", "sub", "create")
    assert azure.deploy("-i", "-v", "1.0").code == 0


def test_the_subscription_deployment_name_carries_the_region(first_deployment: Deployed) -> None:
    """F14: ARM refuses a deployment name reused in another location (InvalidDeploymentLocation)."""
    run = first_deployment.run
    (deployment,) = _calls(run, "deployment", "sub", "create")
    assert deployment["args"][deployment["args"].index("--name") + 1] == "loadme-infra-westeurope"


def test_the_deployers_vault_role_is_removed_once_the_secrets_are_written(
        first_deployment: Deployed, deployed: FakeAzure, tmp_path: Path) -> None:
    """L10: no standing Key Vault Secrets Officer for whoever ran deploy.sh, even when the run stops early."""
    assignment = deployment_outputs({"deployerPrincipalId": "deployer-object-id"})["deployerAssignmentId"]["value"]
    assert assignment.endswith("/providers/Microsoft.Authorization/roleAssignments/" + assignment.rsplit("/", 1)[1])
    run, azure = first_deployment.run, deployed
    assert run.code == 0, run.output
    order = [" ".join(c["args"][:3]) for c in run.calls]
    assert order.index("keyvault secret set") < order.index("role assignment delete") < order.index(
        "functionapp deployment source")
    assert azure.state["removed_assignments"] == [assignment]
    params = json.loads((REPO / "infra" / "main.parameters.json").read_text())
    params["parameters"]["secretVariables"]["value"] = {"___ApiToken": "api-token"}  # missing: the run stops
    operator_file = tmp_path / "operator.parameters.json"
    operator_file.write_text(json.dumps(params))
    assert azure.deploy("-f", str(operator_file)).code == 1
    assert azure.state["removed_assignments"] == [assignment, assignment]


def test_the_script_never_puts_a_secret_on_a_command_line() -> None:
    text = SCRIPT.read_text()
    assert "--value" not in text
    for line in text.splitlines():
        if "keyvault secret set" in line:
            assert "--file" in text[text.index(line):].split("\n\n")[0]
    assert "RESULT_KEY=" not in text and "appsettings set" not in text
    assert stat.S_IMODE(SCRIPT.stat().st_mode) & 0o111  # executable
