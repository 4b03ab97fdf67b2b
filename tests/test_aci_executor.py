"""The ACI executor through the real SDK clients on a fake ARM transport: whole requests asserted."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from azure.mgmt.containerinstance import ContainerInstanceManagementClient
from azure.mgmt.containerregistry import ContainerRegistryManagementClient
from azure.mgmt.resource.deployments import DeploymentsMgmtClient

from loadme.errors import DeployRejected, QuotaExceeded, TransientError
from loadme.executors import DeploymentFailure
from loadme.executors.aci import SDK_RETRIES, AciExecutor
from loadme.executors.aci_parameters import group_body, template_parameters
from loadme.names import OWNER_TAG, deployment_name
from loadme.slot import Slot
from tests.fake_arm import (
    ACI_API,
    ARM,
    RG,
    SUB,
    FakeAci,
    FakeArm,
    FakeCredential,
    Reply,
    error,
    group_json,
    group_path,
)
from tests.support import Clock, sample_aci_settings, sample_container_spec

TS_ID = "/ts/v1"
DEPLOYMENTS = f"/subscriptions/{SUB}/resourcegroups/{RG}/providers/Microsoft.Resources/deployments/"
ACR = ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/mgmt/providers/"
       "Microsoft.ContainerRegistry/registries/loadmeacr")


def _executor(script: list[Reply], mode: str = "templatespec", registry_auth: str = "identity") -> tuple[
        AciExecutor, FakeArm]:
    arm = FakeArm(script)
    options: dict[str, Any] = arm.client_options(SDK_RETRIES)
    credential = FakeCredential()
    aci = sample_aci_settings(registry_auth)
    aci = type(aci)(**{**aci.__dict__, "deploy_mode": mode, "template_spec_version_id": TS_ID,
                       "registry_resource_id": ACR if registry_auth == "admin" else ""})
    executor = AciExecutor(
        aci,
        ContainerInstanceManagementClient(credential, SUB, **options),
        DeploymentsMgmtClient(credential, SUB, **options),
        ContainerRegistryManagementClient(credential, SUB, **options),
    )
    return executor, arm


def _query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


def test_templatespec_deploy_sends_one_deployment_of_the_spec() -> None:
    spec = sample_container_spec()
    executor, arm = _executor([Reply("GET", group_path(spec.name), 404, error("ResourceNotFound", "gone")),
                               Reply("PUT", DEPLOYMENTS + deployment_name(spec.name), 201,
                                     {"id": "d", "name": deployment_name(spec.name),
                                      "properties": {"provisioningState": "Accepted"}},
                                     {"Azure-AsyncOperation": f"{ARM}/operations/1"})])
    assert executor.deploy(spec) is True
    get, put = arm.seen
    assert (get.method, get.url) == ("GET", f"{ARM}{group_path(spec.name)}?api-version={ACI_API}")
    assert put.method == "PUT" and put.url.lower() == f"{ARM}{DEPLOYMENTS}{deployment_name(spec.name)}".lower() + \
        f"?api-version={_query(put.url)['api-version'][0]}"
    assert put.body == {"properties": {"mode": "Incremental", "templateLink": {"id": TS_ID},
                                       "parameters": template_parameters(spec, executor.aci)}}
    assert len(arm.seen) == 2  # no polling: the container reports back itself


def test_direct_deploy_puts_the_container_group() -> None:
    spec = sample_container_spec()
    executor, arm = _executor([Reply("GET", group_path(spec.name), 404, error("ResourceNotFound", "gone")),
                               Reply("PUT", group_path(spec.name), 201, group_json(spec.name))], mode="direct")
    assert executor.deploy(spec) is True
    put = arm.seen[1]
    assert (put.method, put.url) == ("PUT", f"{ARM}{group_path(spec.name)}?api-version={ACI_API}")
    assert put.body == group_body(template_parameters(spec, executor.aci))
    assert put.body["properties"]["imageRegistryCredentials"] == [
        {"server": "loadmeacr.azurecr.io", "identity": executor.aci.identity_id}]


@pytest.mark.parametrize("mode", ["templatespec", "direct"])
def test_existing_group_is_not_created_again(mode: str) -> None:
    spec = sample_container_spec()
    executor, arm = _executor([Reply("GET", group_path(spec.name), 200, group_json(spec.name, "Running"))], mode)
    assert executor.deploy(spec) is False
    assert [s.method for s in arm.seen] == ["GET"]


def test_deployment_already_running_is_not_sent_twice() -> None:
    spec = sample_container_spec()
    executor, _ = _executor([Reply("GET", group_path(spec.name), 404, error("ResourceNotFound", "x")),
                             Reply("PUT", DEPLOYMENTS + ".*", 409, error("DeploymentActive", "busy"))])
    assert executor.deploy(spec) is False


@pytest.mark.parametrize(("reply", "expected"), [
    (group_json("g", "Running"), ("running", None)),
    (group_json("g", "Terminated", exit_code=3), ("terminated", 3)),
    (group_json("g", "Waiting"), ("pending", None)),
    (group_json("g", provisioning="Failed", events=[{"name": "Failed", "message": "Failed to pull image"}]),
     ("failed", None)),
])
def test_state(reply: dict[str, Any], expected: tuple[str, int | None]) -> None:
    executor, _ = _executor([Reply("GET", group_path("g"), 200, reply)])
    status = executor.state("g")
    assert (status.state, status.exit_code) == expected
    if expected[0] == "terminated":
        assert status.finished_at is not None and status.finished_at.year == 2026
    if expected[0] == "failed":
        assert "Failed to pull image" in status.detail


def test_state_of_a_missing_group() -> None:
    executor, _ = _executor([Reply("GET", group_path("g"), 404, error("ResourceNotFound", "x"))])
    assert executor.state("g").state == "missing"


def test_logs_and_delete() -> None:
    executor, arm = _executor([
        Reply("GET", group_path("g") + "/containers/job/logs", 200, {"content": "line 1\nline 2\n"}),
        Reply("DELETE", group_path("g"), 200, group_json("g")),
        Reply("DELETE", group_path("g"), 404, error("ResourceNotFound", "gone")),
        Reply("GET", group_path("g") + "/containers/job/logs", 404, error("ResourceNotFound", "gone")),
    ])
    assert executor.logs("g", tail=50) == "line 1\nline 2\n"
    assert _query(arm.seen[0].url) == {"api-version": [ACI_API], "tail": ["50"]}
    assert executor.delete("g") is True
    assert arm.seen[1].url == f"{ARM}{group_path('g')}?api-version={ACI_API}"
    assert executor.delete("g") is False  # already deleted
    assert executor.logs("g") == ""


def test_throttling_then_success() -> None:
    spec = sample_container_spec()
    executor, arm = _executor([
        Reply("GET", group_path(spec.name), 429, error("TooManyRequests", "slow down"), {"Retry-After": "0"}),
        Reply("GET", group_path(spec.name), 404, error("ResourceNotFound", "x")),
        Reply("PUT", DEPLOYMENTS + ".*", 201, {"id": "d", "properties": {}}),
    ])
    assert executor.deploy(spec) is True
    assert [s.method for s in arm.seen] == ["GET", "GET", "PUT"]


def test_persistent_5xx_becomes_transient_for_the_host_to_retry() -> None:
    spec = sample_container_spec()
    replies = [Reply("GET", group_path(spec.name), 503, error("ServiceUnavailable", "down"), {"Retry-After": "0"})
               for _ in range(SDK_RETRIES + 1)]
    executor, arm = _executor(replies)
    with pytest.raises(TransientError, match="503 ServiceUnavailable"):
        executor.deploy(spec)
    assert len(arm.seen) == SDK_RETRIES + 1


@pytest.mark.parametrize("mode", ["templatespec", "direct"])
@pytest.mark.parametrize(("status", "code", "message", "raised"), [
    (409, "ContainerGroupQuotaReached", "Resource type quota exceeded", QuotaExceeded),
    (400, "InvalidTemplate", "Deployment template validation failed: 'cpu'", DeployRejected),
    # Only DeploymentActive means "already deploying": any other conflict is ARM refusing for good.
    (409, "MissingSubscriptionRegistration",
     "The subscription is not registered to use namespace 'Microsoft.ContainerInstance'", DeployRejected),
    (409, "Conflict", "The resource is in a state that does not allow this operation", DeployRejected),
])
def test_deployment_errors_map_to_what_the_caller_acts_on(
    mode: str, status: int, code: str, message: str, raised: type[Exception]
) -> None:
    spec = sample_container_spec()
    put_path = DEPLOYMENTS + ".*" if mode == "templatespec" else group_path(spec.name)
    # On MissingSubscriptionRegistration the SDK first tries to register the provider itself
    # (ARMAutoResourceProviderRegistrationPolicy); the app's identity may not: 403, original error.
    register = Reply("POST", f"/subscriptions/{SUB}/providers/Microsoft.ContainerInstance/register", 403,
                     error("AuthorizationFailed", "no permission to register"))
    executor, _ = _executor([Reply("GET", group_path(spec.name), 404, error("ResourceNotFound", "x")),
                             Reply("PUT", put_path, status, error(code, message)), register], mode)
    with pytest.raises(raised) as err:
        executor.deploy(spec)
    assert str(err.value) == f"{code}: {message}"


def test_admin_credentials_only_in_admin_mode_and_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    spec = sample_container_spec()
    executor, arm = _executor([
        Reply("GET", group_path(spec.name), 404, error("ResourceNotFound", "x")),
        Reply("POST", ACR + "/listCredentials", 200,
              {"username": "loadmeacr", "passwords": [{"name": "password", "value": "acr-secret-pw"}]}),
        Reply("PUT", group_path(spec.name), 201, group_json(spec.name)),
    ], mode="direct", registry_auth="admin")
    with caplog.at_level(logging.DEBUG):
        assert executor.deploy(spec) is True
    assert arm.seen[2].body["properties"]["imageRegistryCredentials"] == [
        {"server": "loadmeacr.azurecr.io", "username": "loadmeacr", "password": "acr-secret-pw"}]
    assert "acr-secret-pw" not in caplog.text


def test_identity_mode_never_lists_credentials() -> None:
    spec = sample_container_spec()
    executor, arm = _executor([Reply("GET", group_path(spec.name), 404, error("ResourceNotFound", "x")),
                               Reply("PUT", group_path(spec.name), 201, group_json(spec.name))], mode="direct")
    executor.deploy(spec)
    assert not any("listCredentials" in s.url for s in arm.seen)


def test_list_owned_reads_the_tags() -> None:
    tags = {OWNER_TAG: "loadme", "loadme-run-id": "a" * 32, "loadme-step": "2",
            "loadme-deadline": "2026-11-25T03:00:00+00:00"}
    executor, _ = _executor([Reply("GET", f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/"
                                          "Microsoft.ContainerInstance/containerGroups", 200,
                                   {"value": [group_json("mine", tags=tags), group_json("theirs", tags={})]})])
    [owned] = executor.list_owned()
    assert (owned.name, owned.run_id, owned.step, owned.deadline) == ("mine", "a" * 32, 2, tags["loadme-deadline"])


def test_list_owned_reads_the_slot_from_the_tags_and_skips_tags_no_slot_makes() -> None:
    base = {OWNER_TAG: "loadme", "loadme-run-id": "a" * 32, "loadme-deadline": "2026-11-25T03:00:00+00:00"}
    groups = [group_json("retry", tags={**base, "loadme-step": "2", "loadme-attempt": "3"}),
              group_json("padded", tags={**base, "loadme-step": "02"}),
              group_json("first", tags={**base, "loadme-step": "2", "loadme-attempt": "1"})]
    executor, _ = _executor([Reply("GET", f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/"
                                          "Microsoft.ContainerInstance/containerGroups", 200, {"value": groups})])
    assert [(g.name, g.slot) for g in executor.list_owned()] == [("retry", Slot("a" * 32, 2, attempt=3))]


def test_the_regions_quota_message_is_a_quota_even_as_a_503() -> None:
    """ACI sends the region's quota as 503 ServiceUnavailable: a wait, not five retries and poison."""
    spec = sample_container_spec()
    message = ("Resource type 'Microsoft.ContainerInstance/containerGroups' container group quota 'ContainerGroups' "
               "exceeded in region 'westeurope'. Limit: '100', Usage: '100' Requested: '1'.")
    executor, arm = _executor([Reply("GET", group_path(spec.name), 404, error("ResourceNotFound", "x"))] + [
        Reply("PUT", group_path(spec.name), 503, error("ServiceUnavailable", message))] * (SDK_RETRIES + 1), "direct")
    with pytest.raises(QuotaExceeded, match="container group quota 'ContainerGroups' exceeded"):
        executor.deploy(spec)
    assert [s.method for s in arm.seen] == ["GET"] + ["PUT"] * (SDK_RETRIES + 1)  # the SDK's quick retries, then a wait


FAILED_DEPLOYMENT = {"provisioningState": "Failed", "error": {
    "code": "DeploymentFailed", "message": "At least one resource deployment operation failed.",
    "details": [{"code": "ResourceDeploymentFailure", "message": "The resource operation completed with terminal "
                 "provisioning state 'Failed'.", "details": [
                     {"code": "ContainerGroupQuotaReached", "message": "Resource type 'Microsoft.ContainerInstance/"
                      "containerGroups' has reached its quota limit in region 'westeurope'."}]},
                {"code": "InaccessibleImage", "message": "The image\n'x' is not accessible."}]}}


@pytest.mark.parametrize(("properties", "expected"), [
    (FAILED_DEPLOYMENT, DeploymentFailure(
        "ContainerGroupQuotaReached: Resource type 'Microsoft.ContainerInstance/containerGroups' has reached its "
        "quota limit in region 'westeurope'.; InaccessibleImage: The image 'x' is not accessible.", quota=True)),
    ({"provisioningState": "Failed", "error": {"code": "InvalidTemplateDeployment", "message": "bad cpu"}},
     DeploymentFailure("InvalidTemplateDeployment: bad cpu", quota=False)),
    ({"provisioningState": "Failed"}, DeploymentFailure("the deployment failed", quota=False)),
    ({"provisioningState": "Running"}, None),
    ({"provisioningState": "Succeeded"}, None),
    (None, None),  # no such deployment (404)
])
def test_failed_deployment_reads_the_root_causes_of_arms_error(properties: dict[str, Any] | None,
                                                               expected: DeploymentFailure | None) -> None:
    name = sample_container_spec().name
    path = DEPLOYMENTS + deployment_name(name)
    reply = (Reply("GET", path, 200, {"id": path, "name": deployment_name(name), "properties": properties})
             if properties is not None else Reply("GET", path, 404, error("DeploymentNotFound", "none")))
    executor, arm = _executor([reply])
    assert executor.failed_deployment(name) == expected
    [get] = arm.seen
    assert get.method == "GET" and get.url.lower() == f"{ARM}{path}".lower() + \
        f"?api-version={_query(get.url)['api-version'][0]}"


def test_failed_deployment_reads_nothing_in_direct_mode() -> None:
    """ACI answers a direct PUT itself; a group that fails later is there for `state` to read."""
    executor, arm = _executor([], "direct")
    assert executor.failed_deployment(sample_container_spec().name) is None
    assert arm.seen == []


# ---- the error table (loadme.executors.arm_errors), every row through the real SDK clients ----------------------
# What each documented code must do on a create, and the status ARM or ACI answers it with. Written out
# here rather than read from the table, so a row whose action changes fails a test.
WAITS, RETRIES, FAILS, ALREADY = QuotaExceeded, TransientError, DeployRejected, "already deploying"
ROW_OUTCOMES: dict[str, tuple[int, Any]] = {
    "ContainerGroupQuotaReached": (409, WAITS),
    "ResourceQuotaExceeded": (400, WAITS),
    "QuotaExceeded": (400, WAITS),
    "ServiceUnavailable": (503, WAITS),  # the region's quota; its 409 capacity form is tested below
    "AllocationFailed": (409, WAITS),
    "TooManyRequests": (429, WAITS),
    "SubscriptionRequestsThrottled": (429, WAITS),
    "TenantRequestsThrottled": (429, WAITS),
    "ResourceRequestsThrottled": (429, WAITS),
    "ResourceCollectionRequestsThrottled": (429, WAITS),
    "RetryableErrorDueToAnotherOperation": (429, WAITS),
    "RegistryErrorResponse": (400, WAITS),
    "DeploymentQuotaExceeded": (400, FAILS),  # the deployment history is full: never a wait (review F1)
    "ResourceNotFound": (404, FAILS),
    "NotFound": (404, FAILS),
    "ResourceGroupNotFound": (404, FAILS),
    "DeploymentNotFound": (404, FAILS),
    "InaccessibleImage": (400, FAILS),
    "ImageNotFound": (400, FAILS),
    "OsVersionNotSupported": (400, FAILS),
    "InvalidTemplate": (400, FAILS),
    "InvalidTemplateDeployment": (400, FAILS),
    "InvalidRequestContent": (400, FAILS),
    "InvalidRequestFormat": (400, FAILS),
    "InvalidParameter": (400, FAILS),
    "BadRequest": (400, FAILS),
    "SkuNotAvailable": (400, FAILS),
    "MissingSubscriptionRegistration": (409, FAILS),
    "NoRegisteredProviderFound": (400, FAILS),
    "AuthorizationFailed": (403, FAILS),
    "LinkedAuthorizationFailed": (403, FAILS),
    "RequestDisallowedByPolicy": (403, FAILS),
    "RegionDoesNotAllowProvisioning": (400, FAILS),
    "InternalServerError": (500, RETRIES),
    "AnotherOperationInProgress": (409, RETRIES),
    "DeploymentActive": (409, ALREADY),
}


def test_every_row_of_the_table_has_an_expected_outcome_and_a_learn_page_or_issue() -> None:
    from loadme.executors.arm_errors import TABLE

    assert sorted(row.code for row in TABLE) == sorted(ROW_OUTCOMES)
    assert all("learn.microsoft.com" in row.source or "#" in row.source for row in TABLE)


def _refused_create(mode: str, status: int, body: dict[str, Any]) -> tuple[Any, FakeArm, str]:
    """deploy() of a fresh spec whose PUT ARM answers with `status`/`body` every time (the SDK's quick
    retries included): what it returned or raised, the fake, and the message ARM sent."""
    spec = sample_container_spec()
    put_path = DEPLOYMENTS + ".*" if mode == "templatespec" else group_path(spec.name)
    # On MissingSubscriptionRegistration the SDK first tries to register the provider itself; the app's
    # identity may not (403), and the original error stands.
    register = Reply("POST", f"/subscriptions/{SUB}/providers/Microsoft.ContainerInstance/register", 403,
                     error("AuthorizationFailed", "no permission to register"))
    retry_after = {"Retry-After": "0"} if status in (429, 503) else {}  # as ARM sends it; no sleep here
    executor, arm = _executor([Reply("GET", group_path(spec.name), 404, error("ResourceNotFound", "x"))]
                              + [Reply("PUT", put_path, status, body, retry_after)] * (SDK_RETRIES + 1)
                              + [register], mode)
    try:
        outcome: Any = executor.deploy(spec)
    except (QuotaExceeded, TransientError, DeployRejected) as exc:
        outcome = exc
    return outcome, arm, spec.name


def _assert_outcome(outcome: Any, expected: Any, *texts: str) -> None:
    if expected == ALREADY:
        assert outcome is False
        return
    assert type(outcome) is expected, outcome
    for text in texts:
        assert text in str(outcome)


@pytest.mark.parametrize("mode", ["templatespec", "direct"])
@pytest.mark.parametrize("code", sorted(ROW_OUTCOMES))
def test_each_documented_code_at_the_top_level_of_a_refused_create(mode: str, code: str) -> None:
    status, expected = ROW_OUTCOMES[code]
    message = f"ARM says {code} happened"
    outcome, arm, _ = _refused_create(mode, status, error(code, message))
    _assert_outcome(outcome, expected, code, message)  # a failure carries ARM's own code and message
    puts = [s for s in arm.seen if s.method == "PUT"]
    assert len(puts) == (SDK_RETRIES + 1 if status in (429, 500, 503) else 1)  # only the SDK's quick retries


@pytest.mark.parametrize("mode", ["templatespec", "direct"])
@pytest.mark.parametrize("code", sorted(ROW_OUTCOMES))
def test_each_documented_code_nested_in_the_details_of_a_preflight_refusal(mode: str, code: str) -> None:
    """ARM's preflight wraps the cause in InvalidTemplateDeployment (400): the cause decides (review F5)."""
    _, expected = ROW_OUTCOMES[code]
    message = f"inner: {code} happened"
    body = {"error": {"code": "InvalidTemplateDeployment", "message": "The template deployment 'x-deploy' is not "
                      "valid according to the validation procedure. See inner errors for details.",
                      "details": [{"code": "ValidationFailed", "message": "resource checks failed",
                                   "details": [{"code": code, "message": message}]}]}}
    outcome, _, _ = _refused_create(mode, 400, body)
    _assert_outcome(outcome, expected, "InvalidTemplateDeployment", f"{code}: {message}")


@pytest.mark.parametrize("mode", ["templatespec", "direct"])
def test_acis_capacity_refusal_sent_as_409_service_unavailable_is_a_wait(mode: str) -> None:
    """learn.microsoft.com/troubleshoot/azure/azure-container-instances/configuration-setup/
    service-unavailable-requested-resource-is-not-available: ServiceUnavailable (409)."""
    message = ("The requested resource is not available in the location 'westeurope' at this moment. Please retry "
               "with a different resource request or in another location. Resource requested: '1' CPU '1.5' GB "
               "memory 'Linux' OS")
    outcome, _, _ = _refused_create(mode, 409, error("ServiceUnavailable", message))
    _assert_outcome(outcome, WAITS, message)


@pytest.mark.parametrize("mode", ["templatespec", "direct"])
@pytest.mark.parametrize(("status", "expected"), [(429, WAITS), (503, RETRIES), (500, RETRIES), (400, FAILS),
                                                  (409, FAILS), (404, FAILS)])
def test_a_code_the_table_does_not_know_is_judged_by_its_status(mode: str, status: int, expected: Any) -> None:
    outcome, _, _ = _refused_create(mode, status, error("SomethingNew", "a code no page lists"))
    _assert_outcome(outcome, expected, "SomethingNew: a code no page lists")


def test_an_error_echoing_a_secure_value_or_a_sas_is_scrubbed_before_it_leaves_the_executor() -> None:
    """S2: ARM's text may quote what the request carried; the spec's secure values never leave."""
    spec = sample_container_spec()
    secure = [item["secureValue"] for item in spec.environment if "secureValue" in item]
    assert "hunter2" in secure
    message = ("InvalidParameter value 'hunter2' of '___ApiToken' and https://a.queue.core.windows.net/q?sv=1&sig=AbC\n"
               + "x" * 600)
    executor, _ = _executor([Reply("GET", group_path(spec.name), 404, error("ResourceNotFound", "x")),
                             Reply("PUT", group_path(spec.name), 400, error("InvalidParameter", message))], "direct")
    with pytest.raises(DeployRejected) as err:
        executor.deploy(spec)
    text = str(err.value)
    assert "hunter2" not in text and "sig=AbC" not in text and "sig=***" in text
    assert len(text) <= 500 and "\n" not in text


def _failed(code: str, message: str, nested: bool) -> dict[str, Any]:
    """A deployment ARM failed after accepting it, `code` at the first level of details or deeper."""
    cause = {"code": code, "message": message}
    if nested:
        cause = {"code": "ResourceDeploymentFailure", "message": "The resource operation completed with terminal "
                 "provisioning state 'Failed'.", "details": [cause]}
    return {"provisioningState": "Failed", "error": {
        "code": "DeploymentFailed", "message": "At least one resource deployment operation failed.",
        "details": [cause]}}


@pytest.mark.parametrize("nested", [False, True])
@pytest.mark.parametrize("code", sorted(ROW_OUTCOMES))
def test_each_documented_code_in_a_deployment_arm_failed_after_accepting_it(code: str, nested: bool) -> None:
    """Template-spec mode only (direct mode has no deployment): a wait or a retry deploys the step
    again later (`quota`), anything else fails the run with ARM's cause."""
    name = sample_container_spec().name
    path = DEPLOYMENTS + deployment_name(name)
    executor, _ = _executor([Reply("GET", path, 200, {"id": path, "name": deployment_name(name),
                                                      "properties": _failed(code, f"why: {code}", nested)})])
    failure = executor.failed_deployment(name)
    assert failure == DeploymentFailure(f"{code}: why: {code}", quota=ROW_OUTCOMES[code][1] in (WAITS, RETRIES))


def test_more_deploy_and_remove_cycles_than_arms_deployment_history_holds() -> None:
    """Review F1, through the real SDK clients on FakeAci (which refuses the 801st deployment the
    history keeps): 805 steps deployed and removed in template-spec mode, each removal deleting its
    deployment's record, all deploy; without those deletions the 801st is a failure with ARM's message,
    not a wait."""
    clock = Clock()
    aci = FakeAci(clock)
    options: dict[str, Any] = aci.client_options(SDK_RETRIES)
    settings = sample_aci_settings("identity")
    settings = type(settings)(**{**settings.__dict__, "deploy_mode": "templatespec", "template_spec_version_id": TS_ID})
    executor = AciExecutor(settings, ContainerInstanceManagementClient(FakeCredential(), SUB, **options),
                           DeploymentsMgmtClient(FakeCredential(), SUB, **options))
    for _ in range(FakeAci.HISTORY_LIMIT + 5):
        spec = sample_container_spec()
        assert executor.deploy(spec) is True
        aci.finish(spec.name, 0)
        assert executor.delete(spec.name) is True
        assert executor.delete_deployment(spec.name) is True
        assert executor.delete_deployment(spec.name) is False  # idempotent: already gone (404)
        clock.advance(1)
    assert aci.deployments == {} and aci.groups == {}

    for _ in range(FakeAci.HISTORY_LIMIT):  # what the removals never deleted before
        spec = sample_container_spec()
        assert executor.deploy(spec) is True
        executor.delete(spec.name)
    with pytest.raises(DeployRejected, match=r"^DeploymentQuotaExceeded: Creating the deployment .* would exceed"):
        executor.deploy(sample_container_spec())


def test_delete_deployment_sends_one_delete_in_templatespec_mode_and_nothing_in_direct_mode(
        caplog: pytest.LogCaptureFixture) -> None:
    name = sample_container_spec().name
    path = DEPLOYMENTS + deployment_name(name)
    executor, arm = _executor([Reply("DELETE", path, 202, None, {"Location": f"{ARM}/operationresults/1"}),
                               Reply("DELETE", path, 409, error("DeploymentActive", "still running")),
                               Reply("DELETE", path, 403, error("AuthorizationFailed", "no deployments/delete"))])
    assert executor.delete_deployment(name) is True
    [delete] = arm.seen
    assert delete.method == "DELETE" and delete.body is None
    assert delete.url.lower() == f"{ARM}{path}".lower() + f"?api-version={_query(delete.url)['api-version'][0]}"
    with pytest.raises(TransientError, match="409 DeploymentActive"):  # not deletable yet: the host retries
        executor.delete_deployment(name)
    # An identity without the permission: logged, and the group's removal goes on (the role needs it).
    with caplog.at_level(logging.ERROR):
        assert executor.delete_deployment(name) is False
    assert "Microsoft.Resources/deployments/delete" in caplog.text and "AuthorizationFailed" in caplog.text
    direct, arm = _executor([], "direct")
    assert direct.delete_deployment(name) is False and arm.seen == []


@pytest.mark.parametrize("mode", ["templatespec", "direct"])
def test_bracket_strings_reach_the_group_as_given_not_as_arm_expressions(mode: str) -> None:
    """Security review S1: ARM reads a string nested in an object or array parameter that starts with
    `[` and ends with `]` as an expression (FakeAci refuses it, as ARM's validation does); the executor
    escapes it as `[[...]` in template-spec parameters, so ARM reads back exactly what the step gave.
    Direct mode sends the values as they are."""
    from dataclasses import replace

    clock = Clock()
    aci = FakeAci(clock)
    options: dict[str, Any] = aci.client_options(SDK_RETRIES)
    settings = sample_aci_settings("identity")
    settings = type(settings)(**{**settings.__dict__, "deploy_mode": mode, "template_spec_version_id": TS_ID})
    executor = AciExecutor(settings, ContainerInstanceManagementClient(FakeCredential(), SUB, **options),
                           DeploymentsMgmtClient(FakeCredential(), SUB, **options))
    spec = sample_container_spec()
    spec = replace(spec, command=("grep", "[a-z]", "[[x]", "[y", "z]", "[subscription().id]"),
                   environment=(*spec.environment, {"name": "___Pattern", "value": "[listKeys('x', '1')]"},
                                {"name": "___Secret", "secureValue": "[1, 2]"}))
    assert executor.deploy(spec) is True
    sent = template_parameters(spec, settings)
    if mode == "templatespec":
        read = aci.parameters[deployment_name(spec.name)]
        assert read["command"] == sent["command"]["value"] and read["environment"] == sent["environment"]["value"]
        assert read["command"][-6:] == ["grep", "[a-z]", "[[x]", "[y", "z]", "[subscription().id]"]
        assert read["tags"] == sent["tags"]["value"] and read["image"] == spec.image
    else:
        [put] = [s for s in aci.seen if s.method == "PUT"]
        container = put.body["properties"]["containers"][0]["properties"]
        assert container["command"][-6:] == ["grep", "[a-z]", "[[x]", "[y", "z]", "[subscription().id]"]
        assert {"name": "___Pattern", "value": "[listKeys('x', '1')]"} in container["environmentVariables"]
