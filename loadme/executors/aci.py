"""The `aci` executor: container groups on Azure Container Instances.

Thin verb-named wrappers over the management SDKs (hook style): deploy, state, logs, delete,
list_owned. Two deploy modes (DEPLOY_MODE): `templatespec` (an ARM deployment of the template spec
version, named after the group so a redelivery reuses it) and `direct`
(`container_groups.begin_create_or_update`). Neither waits for the container: the PUT is sent and
the invocation returns; completion comes from the container's own result message. In
`templatespec` mode ARM accepts the deployment first and may fail it later (a quota another user of
the subscription took meanwhile, a region out of capacity): `failed_deployment` reads that error
for the janitor.

Who retries what: the SDK's retry policy is limited to `SDK_RETRIES` quick attempts on 408, 429
and 5xx; when they are spent the error is classified by one table of the codes Azure documents
(loadme.executors.arm_errors), reading the top-level code and every nested `details` entry: a wait
(quota, capacity, throttling on a create) becomes QuotaExceeded, a retry TransientError (the
Functions host retries the message), a refusal for good (an invalid template, a full deployment
history, an image that cannot be pulled, an unregistered provider) DeployRejected with ARM's code
and message; 409 DeploymentActive means the same deployment is already running (nothing to do).
Error text that leaves the executor is scrubbed of the request's secure values and bounded.
The management SDKs are imported lazily: the HTTP functions never pay for them.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from loadme.errors import DeployRejected, QuotaExceeded, TransientError
from loadme.executors.aci_parameters import (
    CONTAINER_NAME,
    TAG_DEADLINE,
    escaped_for_arm,
    group_body,
    template_parameters,
)
from loadme.executors.arm_errors import Action, classify, root_causes, scrub
from loadme.executors.base import ContainerSpec, ContainerStatus, DeploymentFailure, OwnedGroup
from loadme.loading import ACI_MODULES, load
from loadme.names import OWNER_TAG, OWNER_TAG_VALUE, deployment_name
from loadme.slot import Slot

if TYPE_CHECKING:
    from loadme.settings import AciSettings, Settings

logger = logging.getLogger(__name__)
T = TypeVar("T")
SDK_RETRIES = 2
_GROUP_STATES = {"Running": "running", "Waiting": "pending", "Terminated": "terminated"}


class AciExecutor:
    """Runs container groups on ACI in one resource group. Clients are injected (tests pass a fake
    transport through them); `create_aci_executor` builds them for production."""

    def __init__(self, aci: AciSettings, container_client: Any, deployments_client: Any = None,
                 registry_client: Any = None) -> None:
        self.aci = aci
        self._containers = container_client
        self._deployments = deployments_client
        self._registry = registry_client

    # ---- verbs -----------------------------------------------------------------------------
    def deploy(self, spec: ContainerSpec) -> bool:
        """Create the group unless it exists; False if it (or its deployment) already does.

        Raises TransientError, QuotaExceeded or DeployRejected.
        """
        if self._get_group(spec.name) is not None:
            return False
        username, password = self._admin_credentials(spec.image)
        parameters = template_parameters(spec, self.aci, username, password)
        secrets = [password, *(item["secureValue"] for item in spec.environment if "secureValue" in item)]
        log = {"run_id": spec.run_id, "step": spec.step}
        try:
            if self.aci.deploy_mode == "templatespec":
                self._deploy_template_spec(spec.name, parameters, secrets)
            else:
                self._deploy_direct(spec.name, parameters, secrets)
        except _AlreadyDeploying:
            logger.info("deployment of %s already in progress", spec.name, extra=log)
            return False
        logger.info("deployment of %s sent (%s)", spec.name, self.aci.deploy_mode, extra=log)
        return True

    def state(self, name: str) -> ContainerStatus:
        """The group's state from ACI; `missing` on 404."""
        group = self._get_group(name)
        if group is None:
            return ContainerStatus("missing")
        if (group.provisioning_state or "") == "Failed":
            events = group.containers[0].instance_view.events if group.containers[0].instance_view else []
            detail = "; ".join(f"{e.name}: {e.message}" for e in events or [] if e.message)
            return ContainerStatus("failed", None, detail or "provisioning failed")
        view = group.containers[0].instance_view
        current = view.current_state if view else None
        if current is None or current.state is None:
            return ContainerStatus("pending")
        state = _GROUP_STATES.get(current.state, "pending")
        if state == "terminated":
            return ContainerStatus(state, current.exit_code, current.detail_status or "", current.finish_time)
        return ContainerStatus(state)

    def logs(self, name: str, tail: int | None = None) -> str:
        """The container's log (last `tail` lines); empty when the group is gone."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            result = self._call(lambda: self._containers.containers.list_logs(
                self.aci.resource_group, name, CONTAINER_NAME, tail=tail))
        except ResourceNotFoundError:
            return ""
        return str(result.content or "")

    def delete(self, name: str) -> bool:
        """Delete the group (the DELETE is sent, not awaited); False when it was already gone."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self._call(lambda: self._containers.container_groups.begin_delete(
                self.aci.resource_group, name, polling=False))
        except ResourceNotFoundError:
            return False
        return True

    def delete_deployment(self, name: str) -> bool:
        """Delete the ARM deployment of group `name` from the resource group's history (`templatespec`
        mode; the DELETE is sent, not awaited), so the history never reaches ARM's 800 and refuses
        every deployment (DeploymentQuotaExceeded). Deleting a deployment leaves what it deployed
        alone (learn.microsoft.com/azure/azure-resource-manager/troubleshooting/deployment-quota-exceeded).
        False when there was none (404, or `direct` mode) or ARM refused the identity the delete
        (403: logged as an error, since the group's removal must not fail for its history record; the
        full history then fails deployments with ARM's message). Raises TransientError while the
        deployment still runs (409 DeploymentActive) or ARM is unavailable.
        """
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        if self.aci.deploy_mode != "templatespec":
            return False
        try:
            self._call(lambda: self._deployments.deployments.begin_delete(
                self.aci.resource_group, deployment_name(name), polling=False))
        except ResourceNotFoundError:
            return False
        except HttpResponseError as exc:
            if exc.status_code != 403:
                raise
            logger.error("cannot delete deployment %s (needs Microsoft.Resources/deployments/delete): %s",
                         deployment_name(name), scrub(_error_text(exc), ()))
            return False
        return True

    def list_owned(self) -> list[OwnedGroup]:
        """Groups in the deployment resource group that carry this app's owner tag."""
        groups = self._call(lambda: list(self._containers.container_groups.list_by_resource_group(
            self.aci.resource_group)))
        owned = []
        for group in groups:
            tags = group.tags or {}
            if tags.get(OWNER_TAG) != OWNER_TAG_VALUE:
                continue
            slot = Slot.from_tags(tags)
            if slot is None or TAG_DEADLINE not in tags:
                logger.warning("group %s has the owner tag but not the run tags; skipped", group.name)
                continue
            owned.append(OwnedGroup(group.name, slot, tags[TAG_DEADLINE]))
        return owned

    def failed_deployment(self, name: str) -> DeploymentFailure | None:
        """Why the ARM deployment of group `name` failed (`templatespec` mode); None while it runs,
        once it succeeded or when there is none. `direct` mode has nothing to read: ACI answers the
        PUT itself, and a group that fails later is there for `state` to see."""
        from azure.core.exceptions import ResourceNotFoundError

        if self.aci.deploy_mode != "templatespec":
            return None
        try:
            deployment = self._call(lambda: self._deployments.deployments.get(
                self.aci.resource_group, deployment_name(name)))
        except ResourceNotFoundError:
            return None
        properties = deployment.properties
        if properties is None or properties.provisioning_state != "Failed":
            return None
        verdict = classify(properties.error, deploying=True)
        causes = root_causes(properties.error)
        reason = "; ".join(f"{code}: {message}" if code else message for code, message in causes)
        # A wait (quota, capacity, throttling) or a transient fault: the deployment is over, so only
        # deploying the step again tries again; anything else (a full history included) fails the run.
        return DeploymentFailure(scrub(reason, ()) or "the deployment failed",
                                 verdict.action in (Action.WAIT, Action.RETRY))

    # ---- helpers ---------------------------------------------------------------------------
    def _get_group(self, name: str) -> Any:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self._call(lambda: self._containers.container_groups.get(self.aci.resource_group, name))
        except ResourceNotFoundError:
            return None

    def _admin_credentials(self, image: str) -> tuple[str, str]:
        """ACR admin credentials, fetched only in `admin` mode for images on the registry."""
        if self.aci.registry_auth != "admin" or not image.startswith(self.aci.registry_server + "/"):
            return "", ""
        resource = self.aci.registry_resource_id.rstrip("/").split("/")
        group, registry = resource[4], resource[-1]
        credentials = self._call(lambda: self._registry.registries.list_credentials(group, registry))
        return str(credentials.username), str(credentials.passwords[0].value)

    def _deploy_template_spec(self, name: str, parameters: dict[str, Any], secrets: list[str]) -> None:
        from azure.mgmt.resource.deployments.models import Deployment, DeploymentProperties, TemplateLink

        deployment = Deployment(properties=DeploymentProperties(
            mode="Incremental", template_link=TemplateLink(id=self.aci.template_spec_version_id),
            parameters=escaped_for_arm(parameters),
        ))
        self._call(lambda: self._deployments.deployments.begin_create_or_update(
            self.aci.resource_group, deployment_name(name), deployment, polling=False), deploying=True,
            secrets=secrets)

    def _deploy_direct(self, name: str, parameters: dict[str, Any], secrets: list[str]) -> None:
        from azure.mgmt.containerinstance.models import ContainerGroup

        body = ContainerGroup.deserialize(group_body(parameters))
        self._call(lambda: self._containers.container_groups.begin_create_or_update(
            self.aci.resource_group, name, body, polling=False), deploying=True, secrets=secrets)

    def _call(self, operation: Callable[[], T], deploying: bool = False, secrets: list[str] | None = None) -> T:
        """Run an SDK call, mapping its failures to what the caller acts on (module doc). A read's 404
        stays ResourceNotFoundError; a deployment's is DeployRejected (what it needs is missing)."""
        from azure.core.exceptions import (
            HttpResponseError,
            ResourceNotFoundError,
            ServiceRequestError,
            ServiceResponseError,
        )

        try:
            return operation()
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise TransientError(f"ACI request failed: {type(exc).__name__}") from exc
        except HttpResponseError as exc:
            if isinstance(exc, ResourceNotFoundError) and not deploying:
                raise
            status, error = exc.status_code or 0, getattr(exc, "error", None)
            verdict = classify(error, status, deploying)
            text = scrub(_error_text(exc), secrets or ())
            if verdict.action is Action.WAIT:
                raise QuotaExceeded(text) from exc
            if verdict.action is Action.IN_PROGRESS and deploying:
                raise _AlreadyDeploying() from exc
            if verdict.action in (Action.RETRY, Action.IN_PROGRESS):
                raise TransientError(f"ACI answered {status} {text}") from exc
            if deploying:
                raise DeployRejected(text) from exc
            raise


class _AlreadyDeploying(Exception):
    """ARM refused a second deployment of the same name while the first runs (409 DeploymentActive,
    the only conflict that means this): nothing to do."""


def _error_text(exc: Any) -> str:
    """ARM's `code: message`, and the innermost causes when the error has details (a preflight
    `InvalidTemplateDeployment` says only "See inner errors for details")."""
    error = getattr(exc, "error", None)
    code = str(getattr(error, "code", None) or "")
    message = str(getattr(error, "message", None) or exc.message or "")
    text = f"{code}: {message}" if code else message
    if error is not None and getattr(error, "details", None):
        text += " (" + "; ".join(f"{c}: {m}" if c else m for c, m in root_causes(error)) + ")"
    return text


@functools.cache
def _clients(subscription_id: str, with_registry: bool) -> tuple[Any, Any, Any]:
    """One set of management clients per process (imported and built on first use)."""
    load(ACI_MODULES)  # under the lock the functions' first imports take (loadme.loading)
    from azure.mgmt.containerinstance import ContainerInstanceManagementClient
    from azure.mgmt.resource.deployments import DeploymentsMgmtClient

    from loadme.credentials import default_credential

    options: dict[str, Any] = {"retry_total": SDK_RETRIES}
    credential = default_credential()
    containers = ContainerInstanceManagementClient(credential, subscription_id, **options)
    deployments = DeploymentsMgmtClient(credential, subscription_id, **options)
    registry = None
    if with_registry:
        from azure.mgmt.containerregistry import ContainerRegistryManagementClient

        registry = ContainerRegistryManagementClient(credential, subscription_id, **options)
    return containers, deployments, registry


def create_aci_executor(settings: Settings) -> AciExecutor:
    """The ACI executor for these settings, on the process's shared clients."""
    aci = settings.aci
    if aci is None:
        raise ValueError("EXECUTOR=aci needs the ACI settings")
    containers, deployments, registry = _clients(aci.subscription_id, aci.registry_auth == "admin")
    return AciExecutor(aci, containers, deployments, registry)
