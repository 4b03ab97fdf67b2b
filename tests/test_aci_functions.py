"""EXECUTOR=aci through the functions, on Azurite, with ARM behind a fake transport: one whole run
per deploy mode (counting its ARM requests), quota back-off, and the executor switch."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from azure.mgmt.containerinstance import ContainerInstanceManagementClient
from azure.mgmt.resource.deployments import DeploymentsMgmtClient

from loadme.cleanup import PLATFORM_HEADING
from loadme.context import Context, set_context
from loadme.deploy import build_container_spec
from loadme.envelope import RemovalMessage, StepMessage, decode, parse_time
from loadme.executors import create_executor
from loadme.executors.aci import SDK_RETRIES, AciExecutor
from loadme.names import INITJOB_QUEUE, TRIGGER_QUEUES, container_group_name, deployment_name
from loadme.settings import Settings
from tests.fake_arm import RG, SUB, FakeAci, FakeArm, FakeCredential, Reply, error, group_path
from tests.support import (
    OTHER_SECRET_VALUE,
    REPO_ROOT,
    SECRET_VALUE,
    Clock,
    Out,
    http_request,
    next_initjob,
    post_json,
    queue_message,
    response_json,
    result_message,
    user_function,
)

DEPLOYMENTS = f"/subscriptions/{SUB}/resourcegroups/{RG}/providers/Microsoft.Resources/deployments/"
IDENTITY = f"/subscriptions/{SUB}/resourceGroups/mgmt/providers/Microsoft.ManagedIdentity/userAssignedIdentities/c"


def aci_settings(settings_env: dict[str, str], mode: str, **extra: str) -> dict[str, str]:
    return {**settings_env, "EXECUTOR": "aci", "AZURE_SUBSCRIPTION_ID": SUB, "DEPLOYMENT_RESOURCE_GROUP": RG,
            "ACI_LOCATION": "westeurope", "DEPLOY_MODE": mode, "TEMPLATE_SPEC_VERSION_ID": "/ts/loadme/versions/1",
            "CONTAINER_IDENTITY_ID": IDENTITY, "REGISTRY_SERVER": "loadmeacr.azurecr.io",
            "DEFAULT_IMAGE": "loadmeacr.azurecr.io/loadme-runner:1", **extra}


@pytest.fixture
def aci_context(settings_env: dict[str, str], request: pytest.FixtureRequest) -> Iterator[tuple[Context, FakeArm]]:
    mode = getattr(request, "param", "templatespec")
    settings = Settings.from_mapping(aci_settings(settings_env, mode))
    assert settings.aci is not None
    arm = FakeArm([])
    options: dict[str, Any] = arm.client_options(SDK_RETRIES)
    executor = AciExecutor(settings.aci, ContainerInstanceManagementClient(FakeCredential(), SUB, **options),
                           DeploymentsMgmtClient(FakeCredential(), SUB, **options))
    ctx = Context(settings, executor=executor)
    ctx.storage.ensure_resources(list(TRIGGER_QUEUES))
    set_context(ctx)
    yield ctx, arm
    set_context(None)


def _result_for(step: StepMessage, exit_code: int = 0) -> str:
    """The result the container's runner would post (it uploaded its own log)."""
    return result_message(step, exit_code, variables={**step.variables, "___Message": "from ACI"}).to_json()


@pytest.fixture(params=["templatespec", "direct"])
def simulated(settings_env: dict[str, str], request: pytest.FixtureRequest) -> Iterator[tuple[Context, FakeAci, Clock]]:
    """The functions on Azurite with ARM played by a stateful ACI whose instance view lags 30 s."""
    clock = Clock()
    settings = Settings.from_mapping(aci_settings(settings_env, request.param, RESULT_GRACE_SECONDS="120"))
    assert settings.aci is not None
    aci = FakeAci(clock, instance_view_lag=30)
    options = aci.client_options(SDK_RETRIES)
    executor = AciExecutor(settings.aci, ContainerInstanceManagementClient(FakeCredential(), SUB, **options),
                           DeploymentsMgmtClient(FakeCredential(), SUB, **options))
    ctx = Context(settings, clock=clock, executor=executor)
    ctx.storage.ensure_resources(list(TRIGGER_QUEUES))
    set_context(ctx)
    yield ctx, aci, clock
    set_context(None)


LIST_PATH = group_path("x").lower().rsplit("/", 1)[0]


def _put_path(ctx: Context, group: str) -> str:
    templatespec = ctx.settings.aci.deploy_mode == "templatespec"  # type: ignore[union-attr]
    return (DEPLOYMENTS + deployment_name(group) if templatespec else group_path(group)).lower()


def _deployment_deleted(ctx: Context, group: str) -> list[tuple[str, str]]:
    """The DELETE of the step's deployment record that remove_infra sends in template-spec mode."""
    templatespec = ctx.settings.aci.deploy_mode == "templatespec"  # type: ignore[union-attr]
    return [("DELETE", (DEPLOYMENTS + deployment_name(group)).lower())] if templatespec else []


def _deployed(aci: FakeAci) -> tuple[StepMessage, str]:
    _, initjob = post_json({"variables": {"___Name": "Ada"}})
    step = decode(initjob.get()[0], StepMessage)
    user_function("dq_init_job")(queue_message(initjob.get()[0]), removeinfra=Out())
    return step, container_group_name(step.run_id, 1)


def _finish_through_stage2(step: StepMessage, exit_code: int) -> None:
    removal = Out()
    user_function("stage2")(queue_message(_result_for(step, exit_code)), initjob=Out(), removeinfra=removal)
    user_function("remove_infra")(queue_message(removal.get()[0]))


def _run(run_id: str) -> dict[str, Any]:
    return response_json(user_function("run_status")(  # type: ignore[no-any-return]
        http_request("GET", f"runs/{run_id}", route_params={"run_id": run_id})))


@pytest.mark.parametrize("exit_code", [0, 3])
def test_a_run_that_reports_costs_three_arm_requests_however_late_the_instance_view(
        simulated: tuple[Context, FakeAci, Clock], exit_code: int) -> None:
    """GET (does it exist?), PUT, DELETE (and in template-spec mode the DELETE of the deployment's
    record): the container's own result carries its exit code and its log is already archived by
    the runner, so nothing waits for ACI to notice the container ended."""
    ctx, aci, clock = simulated
    step, group = _deployed(aci)
    clock.advance(5)
    aci.finish(group, exit_code, log="never read")  # ACI will say Running for 30 s more
    _finish_through_stage2(step, exit_code)
    assert [(s.method, s.path.lower()) for s in aci.seen] == [
        ("GET", group_path(group).lower()), ("PUT", _put_path(ctx, group)), ("DELETE", group_path(group).lower()),
        *_deployment_deleted(ctx, group)]
    assert aci.deployments == {}  # the history holds nothing of a finished step
    status = _run(step.run_id)
    assert (status["state"], status["cleaned_up"]) == ("succeeded" if exit_code == 0 else "failed", True)
    assert next(e for e in status["events"] if e["event"] == "logs_archived")["source"] == "runner"


def test_a_silent_container_costs_at_most_five_arm_requests(simulated: tuple[Context, FakeAci, Clock]) -> None:
    """A container that never reports: the janitor reads its state (once it ended and the lagging
    instance view shows it), then remove_infra reads its log from ACI and deletes it."""
    ctx, aci, clock = simulated
    step, group = _deployed(aci)
    clock.advance(10)
    aci.finish(group, 137, log="killed before it could report")
    for _ in range(3):  # janitor ticks, five minutes apart (its default schedule)
        clock.advance(300)
        removals = Out()
        user_function("janitor")(None, removeinfra=removals)
        for text in removals.get() or []:
            user_function("remove_infra")(queue_message(text))
    per_run = [(s.method, s.path.lower()) for s in aci.seen if s.path.lower() != LIST_PATH]
    assert per_run == [("GET", group_path(group).lower()), ("PUT", _put_path(ctx, group)),
                       ("GET", group_path(group).lower()), ("GET", group_path(group).lower() + "/containers/job/logs"),
                       ("DELETE", group_path(group).lower()), *_deployment_deleted(ctx, group)]
    assert len([s for s in aci.seen if s.path.lower() == LIST_PATH]) == 3  # one per tick, for all runs
    status = _run(step.run_id)
    assert (status["state"], status["cleaned_up"]) == ("failed", True)
    archived = next(e for e in status["events"] if e["event"] == "logs_archived")
    assert archived["source"] == "platform"
    assert ctx.storage.logs.download_blob(archived["blob"]).readall() == (
        PLATFORM_HEADING.encode() + b"killed before it could report")  # says it is only the platform's tail


@pytest.mark.parametrize(("status", "code"), [(409, "ContainerGroupQuotaReached"), (429, "TooManyRequests")])
def test_a_create_aci_refuses_for_quota_or_throttling_waits_and_never_fails_the_run(
        aci_context: tuple[Context, FakeArm], status: int, code: str) -> None:
    ctx, arm = aci_context
    response, initjob = post_json({"variables": {}})
    run_id = response_json(response)["run_id"]
    group = container_group_name(run_id, 1)
    text = initjob.get()[0]
    queue = ctx.storage.queue(INITJOB_QUEUE)
    queue.clear_messages()
    for _ in range(8):  # more refusals than maxDequeueCount: none of them counts toward poison
        arm.script = [Reply("GET", group_path(group), 404, error("ResourceNotFound", "x"))] + [
            Reply("PUT", DEPLOYMENTS + ".*", status, error(code, "no room"))] * (SDK_RETRIES + 1)
        user_function("dq_init_job")(queue_message(text, dequeue_count=1), removeinfra=Out())
        assert list(queue.receive_messages()) == []  # sent again as a new message, invisible for a while
        assert queue.get_queue_properties().approximate_message_count == 1
        queue.clear_messages()
        assert group not in ctx.admission.grants()  # the grant it could not use was given back
    status_doc = response_json(user_function("run_status")(
        http_request("GET", f"runs/{run_id}", route_params={"run_id": run_id})))
    assert status_doc["state"] == "queued" and "ACI refused the create" in status_doc["reason"]
    assert "terminal" not in [e["event"] for e in status_doc["events"]]


def _janitor_tick(clock: Clock) -> None:
    """A janitor tick five minutes on (its default schedule), its removals carried out."""
    clock.advance(300)
    removals = Out()
    user_function("janitor")(None, removeinfra=removals)
    for text in removals.get() or []:
        user_function("remove_infra")(queue_message(text))


QUOTA_MESSAGE = ("Resource type 'Microsoft.ContainerInstance/containerGroups' container group quota "
                 "'StandardCores' exceeded in region 'westeurope'. Limit: '100', Usage: '100' Requested: '1'.")


@pytest.mark.parametrize("simulated", ["templatespec"], indirect=True)
def test_a_deployment_arm_fails_later_for_quota_waits_in_line_and_is_deployed_again(
        simulated: tuple[Context, FakeAci, Clock], monkeypatch: pytest.MonkeyPatch) -> None:
    """ARM accepted the deployment, then another user of the subscription took the quota: the step
    is not lost to a timeout at its deadline, it waits in line again and runs."""
    monkeypatch.setattr("loadme.deploy.QUOTA_REFUSED_WAIT_SECONDS", 1)  # the real queue's invisibility
    ctx, aci, clock = simulated
    step, group = _deployed(aci)
    aci.fail_deployment(group, "ServiceUnavailable", QUOTA_MESSAGE)
    _janitor_tick(clock)
    status = _run(step.run_id)
    assert status["state"] == "queued"
    assert status["reason"] == f"waiting for capacity: the deployment failed (ServiceUnavailable: {QUOTA_MESSAGE})"
    assert group not in ctx.admission.grants() and ctx.journal.index.active() == []
    assert len(ctx.admission.waiting()) == 1

    again = next_initjob(ctx, step.run_id)
    assert parse_time(again.deadline) == parse_time(step.deadline) + timedelta(seconds=1)  # the wait does not count
    assert (again.variables, again.steps) == ({**step.variables, "___Deadline": again.deadline}, step.steps)
    aci.seen.clear()
    user_function("dq_init_job")(queue_message(again.to_json()), removeinfra=Out())
    assert [(s.method, s.path.lower()) for s in aci.seen] == [
        ("GET", group_path(group).lower()), ("PUT", _put_path(ctx, group))]
    assert _run(step.run_id)["state"] == "running" and group in ctx.admission.grants()
    _finish_through_stage2(again, 0)
    assert (_run(step.run_id)["state"], _run(step.run_id)["cleaned_up"]) == ("succeeded", True)


@pytest.mark.parametrize("simulated", ["templatespec"], indirect=True)
def test_a_deployment_arm_fails_later_fails_the_run_with_arms_reason_at_the_next_tick(
        simulated: tuple[Context, FakeAci, Clock]) -> None:
    """Not at the deadline as a guess ("deployment failed?"): at the next tick, with ARM's own cause."""
    ctx, aci, clock = simulated
    step, group = _deployed(aci)
    aci.fail_deployment(group, "InaccessibleImage", "The image 'loadmeacr.azurecr.io/loadme-runner:1' in "
                                                    "container group 'x' is not accessible.")
    _janitor_tick(clock)
    status = _run(step.run_id)
    assert (status["state"], status["cleaned_up"]) == ("failed", True)
    assert status["reason"] == ("step 1 deployment failed: InaccessibleImage: The image "
                                "'loadmeacr.azurecr.io/loadme-runner:1' in container group 'x' is not accessible.")
    assert group not in ctx.admission.grants() and ctx.journal.index.active() == []
    aci.seen.clear()
    _janitor_tick(clock)  # settled: the next tick reads nothing of this run
    assert [(s.method, s.path.lower()) for s in aci.seen] == [("GET", LIST_PATH)]


def test_executor_setting_picks_the_implementation(settings_env: dict[str, str]) -> None:
    assert type(create_executor(Settings.from_mapping(settings_env))).__name__ == "LocalExecutor"
    assert isinstance(create_executor(Settings.from_mapping(aci_settings(settings_env, "direct"))), AciExecutor)


def test_identity_result_auth_gives_the_container_no_queue_sas(aci_context: tuple[Context, FakeArm],
                                                                settings_env: dict[str, str]) -> None:
    settings = Settings.from_mapping(aci_settings(settings_env, "direct", RESULT_AUTH="identity",
                                                  CONTAINER_IDENTITY_CLIENT_ID="client-id-1"))
    ctx = Context(settings, executor=aci_context[0].executor)
    _, initjob = post_json({"variables": {}})
    env = {e["name"]: e for e in build_container_spec(ctx, decode(initjob.get()[0], StepMessage)).environment}
    assert "LOADME_RESULT_SAS" not in env
    # The log goes with a SAS for its one blob in both modes: the containers' identity has no blob role.
    assert set(env["LOADME_LOG_SAS"]) == {"name", "secureValue"} and "sr=b" in env["LOADME_LOG_SAS"]["secureValue"]
    assert env["LOADME_IDENTITY_CLIENT_ID"] == {"name": "LOADME_IDENTITY_CLIENT_ID", "value": "client-id-1"}
    assert env["LOADME_RESULT_AUTH"]["value"] == "identity"


def test_rejected_deployment_fails_the_run_with_the_arm_message(aci_context: tuple[Context, FakeArm]) -> None:
    arm = aci_context[1]
    response, initjob = post_json({"variables": {}})
    run_id = response_json(response)["run_id"]
    group = container_group_name(run_id, 1)
    arm.script = [Reply("GET", group_path(group), 404, error("ResourceNotFound", "x")),
                  Reply("PUT", DEPLOYMENTS + ".*", 400, error("InvalidTemplateDeployment", "image not allowed"))]
    removals = Out()
    user_function("dq_init_job")(queue_message(initjob.get()[0]), removeinfra=removals)
    status = response_json(user_function("run_status")(
        http_request("GET", f"runs/{run_id}", route_params={"run_id": run_id})))
    terminal = next(e for e in status["events"] if e["event"] == "terminal")
    assert status["state"] == "failed"
    assert terminal["reason"] == "deployment rejected: InvalidTemplateDeployment: image not allowed"
    assert [decode(r, RemovalMessage).reason for r in removals.get()] == ["deploy_failed"]


def test_the_app_does_not_import_the_management_sdks() -> None:
    code = ("import sys, function_app; loaded = sorted(m for m in sys.modules if m.startswith('azure.mgmt')); "
            "print(loaded); sys.exit(1 if loaded else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("simulated", ["templatespec"], indirect=True)
def test_steps_past_arms_deployment_history_limit_still_run(simulated: tuple[Context, FakeAci, Clock]) -> None:
    """Review F1: ARM keeps at most 800 deployments per resource group and refuses the next with
    DeploymentQuotaExceeded (FakeAci enforces it). The history starts two short of full, as 798 earlier
    steps would have left it before remove_infra deleted deployments; each step's removal now deletes its
    own, so step after step deploys, runs and is removed, and the history does not grow. (Before, the
    third run waited `queued` for ever: DeploymentQuotaExceeded read as ACI quota.) 800+ whole cycles
    through the executor: tests/test_aci_executor.py."""
    _, aci, clock = simulated
    for n in range(FakeAci.HISTORY_LIMIT - 2):
        aci.deployments[f"loadme-{n:032x}-1-deploy"] = {"provisioningState": "Succeeded"}
    for _ in range(6):
        step, group = _deployed(aci)
        aci.finish(group, 0)
        _finish_through_stage2(step, 0)
        status = _run(step.run_id)
        assert (status["state"], status["cleaned_up"]) == ("succeeded", True), status.get("reason")
        assert len(aci.deployments) == FakeAci.HISTORY_LIMIT - 2 and aci.groups == {}
        clock.advance(15)


CAPACITY_MESSAGE = ("The requested resource with '1' CPU and '1.5' GB memory is not available in the location "
                    "'westeurope' at this moment. Please retry with a different resource request or in another "
                    "location.")
# ARM's preflight refusal of a template-spec deployment (or ACI's of a group) with the cause in its details.
CAPACITY_IN_PREFLIGHT = {"error": {
    "code": "InvalidTemplateDeployment", "message": "The template deployment 'x-deploy' is not valid according to "
    "the validation procedure. See inner errors for details.",
    "details": [{"code": "ServiceUnavailable", "message": CAPACITY_MESSAGE}]}}


def test_a_create_refused_for_capacity_waits_without_moving_the_deadline_and_times_out_at_it(
        simulated: tuple[Context, FakeAci, Clock], monkeypatch: pytest.MonkeyPatch) -> None:
    """Review F5: capacity in a refusal's details is a wait (it was a failure), and the wait is bounded by
    the run's deadline (it used to move the deadline on by every wait): still refused at the deadline,
    the run times out with ACI's reason."""
    monkeypatch.setattr("loadme.deploy.QUOTA_REFUSED_WAIT_SECONDS", 1)  # the real queue's invisibility
    ctx, aci, clock = simulated
    aci.refusals = [(400, CAPACITY_IN_PREFLIGHT)] * 2
    step, group = _deployed(aci)
    status = _run(step.run_id)
    assert status["state"] == "queued" and CAPACITY_MESSAGE in status["reason"], status.get("reason")
    again = next_initjob(ctx, step.run_id)
    assert again.deadline == step.deadline and again.variables == step.variables  # the wait counts
    user_function("dq_init_job")(queue_message(again.to_json()), removeinfra=Out())  # refused again
    last = next_initjob(ctx, step.run_id)
    assert last.deadline == step.deadline
    clock.advance((parse_time(step.deadline) - clock()).total_seconds() + 1)
    user_function("dq_init_job")(queue_message(last.to_json()), removeinfra=Out())
    status = _run(step.run_id)
    assert status["state"] == "timed_out"
    assert status["reason"].startswith("deadline passed before the container was deployed (waiting for capacity: "
                                       "ACI refused the create (InvalidTemplateDeployment: ")
    assert group not in aci.groups and aci.refusals == []


@pytest.mark.parametrize("simulated", ["templatespec"], indirect=True)
def test_a_full_deployment_history_fails_the_run_with_arms_message_instead_of_waiting(
        simulated: tuple[Context, FakeAci, Clock]) -> None:
    """Review F1: DeploymentQuotaExceeded is no ACI quota: waiting never frees the history."""
    _, aci, _ = simulated
    for n in range(FakeAci.HISTORY_LIMIT):
        aci.deployments[f"other-{n}"] = {"provisioningState": "Succeeded"}
    step, group = _deployed(aci)
    status = _run(step.run_id)
    assert status["state"] == "failed"
    assert status["reason"].startswith(f"deployment rejected: DeploymentQuotaExceeded: Creating the deployment "
                                       f"'{deployment_name(group)}' would exceed the quota of '800'.")


def test_arms_refusal_echoing_a_secret_or_a_sas_is_stored_scrubbed(simulated: tuple[Context, FakeAci, Clock]) -> None:
    """Security review S2: ARM or ACI text stored as the run's reason never carries a secret value or
    a SAS signature, whichever executor call it came from."""
    _, aci, _ = simulated
    echo = (f"The value '{SECRET_VALUE}' of '___ApiToken' (and {OTHER_SECRET_VALUE}) is invalid; see "
            "https://acct.queue.core.windows.net/stage2/messages?sv=2023-01-03&se=2026&sig=SiGnAtUrE%3D")
    aci.refusals = [(400, {"error": {"code": "InvalidTemplateDeployment", "message": "see inner errors",
                                     "details": [{"code": "InvalidParameter", "message": echo}]}})]
    step, _ = _deployed(aci)
    status = _run(step.run_id)
    assert status["state"] == "failed"
    text = str(status)
    assert SECRET_VALUE not in text and OTHER_SECRET_VALUE not in text and "SiGnAtUrE" not in text
    assert "InvalidParameter: The value '***' of '___ApiToken'" in status["reason"] and "sig=***" in status["reason"]


THROTTLED = ("Operation 'Microsoft.ContainerInstance/containerGroups/write' failed as server encountered too many "
             "requests. Please try after '17' seconds.")


@pytest.mark.parametrize("simulated", ["templatespec"], indirect=True)
def test_a_deployment_arm_failed_later_for_throttling_waits_again_until_the_deadline_then_times_out(
        simulated: tuple[Context, FakeAci, Clock], monkeypatch: pytest.MonkeyPatch) -> None:
    """Review F5: a throttling code deep in a failed deployment's details is a wait (it failed the run),
    and the janitor stops sending the step back in line once its deadline passed."""
    monkeypatch.setattr("loadme.deploy.QUOTA_REFUSED_WAIT_SECONDS", 1)
    ctx, aci, clock = simulated
    step, group = _deployed(aci)
    aci.fail_deployment(group, "ResourceCollectionRequestsThrottled", THROTTLED)
    _janitor_tick(clock)
    status = _run(step.run_id)
    assert status["state"] == "queued" and THROTTLED in status["reason"]

    again = next_initjob(ctx, step.run_id)
    user_function("dq_init_job")(queue_message(again.to_json()), removeinfra=Out())
    assert _run(step.run_id)["state"] == "running"
    aci.fail_deployment(group, "ResourceCollectionRequestsThrottled", THROTTLED)
    clock.advance((parse_time(again.deadline) - clock()).total_seconds())
    _janitor_tick(clock)  # past the deadline
    status = _run(step.run_id)
    assert (status["state"], status["cleaned_up"]) == ("timed_out", True)
    assert status["reason"] == ("step 1 still waiting for capacity at the deadline: "
                                f"ResourceCollectionRequestsThrottled: {THROTTLED}")
    assert aci.deployments == {} and ctx.journal.index.active() == []
