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
from tests.fake_arm import ACI_API, ARM, RG, SUB, FakeArm, FakeCredential, Reply, error, group_json, group_path
from tests.support import sample_aci_settings, sample_container_spec

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
