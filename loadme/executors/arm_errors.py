"""What to do about an ARM or ACI error: one table of the codes Azure documents, and the classifier
that reads it. Pure, no SDK.

An ARM error is a tree: `{code, message, details: [{code, message, details: [...]}, ...]}`. A
preflight refusal wraps its cause in `InvalidTemplateDeployment`, a failed deployment in
`DeploymentFailed`/`ResourceDeploymentFailure`; the code that says why is somewhere inside. So the
classifier looks at the top-level code AND every nested `details` entry. A known code whose own
details hold known codes is only their wrapper; among the innermost known codes the most telling
wins (`_PRECEDENCE`): a full deployment history first (nothing deploys until it is pruned, so waiting
cannot help), then a wait (quota, capacity, throttling, the registry's "retry later"), then a
failure, then a retry. An error with no known code anywhere is judged by its HTTP status alone.

The actions:
- WAIT: the step waits for capacity in line (QuotaExceeded; a failed deployment is deployed again),
  bounded by the run's deadline (loadme.deploy.wait_for_platform);
- RETRY: TransientError, the host retries the message (after the SDK's own quick retries);
- FAIL: DeployRejected, the run fails with ARM's code and message;
- NOT_FOUND: a read finds nothing (`missing`); a deployment that needs something missing fails;
- IN_PROGRESS: the same deployment is already running (nothing to do).
WAIT only means something for a deployment: any other request the table says to wait on is retried.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from loadme.variables import redact

MAX_REASON_CHARS = 500  # a run's reason is one line
# Same pattern as loadme.failures.describe: a SAS URL's signature (and its key's identity) never stays.
_SAS_SIGNATURE = re.compile(r"(?i)\b(sig|skoid|sktid)=[^&\s\"']+")


class Action(enum.Enum):
    """What the caller does about an error (module docstring)."""

    WAIT = "wait"
    RETRY = "retry"
    FAIL = "fail"
    NOT_FOUND = "not_found"
    IN_PROGRESS = "in_progress"


@dataclass(frozen=True)
class KnownError:
    """One row of the table: an error code, what kind of trouble it is, what to do, where Azure says so."""

    code: str
    kind: str  # one of _PRECEDENCE
    action: Action
    source: str


_ARM_COMMON = "https://learn.microsoft.com/azure/azure-resource-manager/troubleshooting/common-deployment-errors"
_ARM_HISTORY = "https://learn.microsoft.com/azure/azure-resource-manager/troubleshooting/deployment-quota-exceeded"
_ARM_THROTTLING = "https://learn.microsoft.com/azure/azure-resource-manager/management/request-limits-and-throttling"
_ARM_NOT_FOUND = "https://learn.microsoft.com/azure/azure-resource-manager/troubleshooting/error-not-found"
_ARM_DEPLOYMENTS = "https://learn.microsoft.com/rest/api/resources/deployments/create-or-update"
_ACI_TROUBLESHOOTING = "https://learn.microsoft.com/azure/container-instances/container-instances-troubleshooting"
_ACI_QUOTA = ("https://learn.microsoft.com/troubleshoot/azure/azure-container-instances/configuration-setup/"
              "container-group-quota-reached (\"ContainerGroupQuotaReached\" error)")
_ACI_503_QUOTA = ("https://learn.microsoft.com/troubleshoot/azure/azure-container-instances/configuration-setup/"
                  "service-unavailable-container-group-quota-exceeded")
_ACI_409_CAPACITY = ("https://learn.microsoft.com/troubleshoot/azure/azure-container-instances/configuration-setup/"
                     "service-unavailable-requested-resource-is-not-available")

TABLE: tuple[KnownError, ...] = (
    # Quota: the subscription's ACI quota (groups or cores per region) is used up; it frees as groups go.
    KnownError("ContainerGroupQuotaReached", "quota", Action.WAIT, _ACI_QUOTA),
    KnownError("ResourceQuotaExceeded", "quota", Action.WAIT, _ARM_COMMON),
    KnownError("QuotaExceeded", "quota", Action.WAIT, _ARM_COMMON + " (OperationNotAllowed: quota) and "
               "https://learn.microsoft.com/azure/azure-resource-manager/troubleshooting/error-resource-quota"),
    # Capacity: ACI sends both the region's quota (503) and "The requested resource with 'x' CPU ... is not
    # available in the location ... Please retry" (409) as ServiceUnavailable; both say to deploy later.
    KnownError("ServiceUnavailable", "capacity", Action.WAIT,
               f"{_ACI_503_QUOTA}; {_ACI_409_CAPACITY}; {_ACI_TROUBLESHOOTING} (Resource not available error)"),
    KnownError("AllocationFailed", "capacity", Action.WAIT, _ARM_COMMON + " (retry the request at a later time)"),
    # Throttling: 429 from ARM or the resource provider (ACI's creates per hour / per 5 minutes). The codes
    # vary by provider; these are the ones ARM and providers send. On a create it is a wait: the limit is
    # per hour, longer than the host's retries last.
    KnownError("TooManyRequests", "throttled", Action.WAIT, _ARM_THROTTLING),
    KnownError("SubscriptionRequestsThrottled", "throttled", Action.WAIT, _ARM_THROTTLING),
    KnownError("TenantRequestsThrottled", "throttled", Action.WAIT, _ARM_THROTTLING),
    KnownError("ResourceRequestsThrottled", "throttled", Action.WAIT, _ARM_THROTTLING),
    KnownError("ResourceCollectionRequestsThrottled", "throttled", Action.WAIT, _ARM_THROTTLING),
    KnownError("RetryableErrorDueToAnotherOperation", "throttled", Action.WAIT,
               _ARM_THROTTLING + " (429 for a temporary condition of the target resource)"),
    # The resource group's deployment history is full (800): nothing deploys until deployments are deleted.
    # Never a wait: ARM's message names the fix (loadme.cleanup deletes each step's deployment).
    KnownError("DeploymentQuotaExceeded", "history", Action.FAIL, _ARM_HISTORY),
    # Not found.
    KnownError("ResourceNotFound", "not_found", Action.NOT_FOUND, _ARM_COMMON),
    KnownError("NotFound", "not_found", Action.NOT_FOUND, _ARM_COMMON),
    KnownError("ResourceGroupNotFound", "not_found", Action.NOT_FOUND, _ARM_COMMON),
    KnownError("DeploymentNotFound", "not_found", Action.NOT_FOUND, _ARM_NOT_FOUND),
    # Registry and image: the image cannot be had as named; waiting does not change that.
    KnownError("InaccessibleImage", "image", Action.FAIL, _ARM_COMMON),
    KnownError("ImageNotFound", "image", Action.FAIL, _ARM_COMMON),
    KnownError("OsVersionNotSupported", "image", Action.FAIL, _ACI_TROUBLESHOOTING),
    # ACI's "An error response is received from the docker registry '...'. Please retry later." (a
    # registry refusing or throttling pulls, e.g. Azure/azure-cli#29300): ACI says to retry later.
    KnownError("RegistryErrorResponse", "registry", Action.WAIT, "Azure/azure-cli#29300 (ACI's own message: "
               "\"Please retry later\"); no Microsoft page lists this code"),
    # Bad request: the template, its parameters or the request are wrong; the same request fails again.
    KnownError("InvalidTemplate", "bad_request", Action.FAIL, _ARM_COMMON),
    KnownError("InvalidTemplateDeployment", "bad_request", Action.FAIL, _ARM_COMMON),
    KnownError("InvalidRequestContent", "bad_request", Action.FAIL, _ARM_COMMON),
    KnownError("InvalidRequestFormat", "bad_request", Action.FAIL, _ARM_COMMON),
    KnownError("InvalidParameter", "bad_request", Action.FAIL, _ARM_COMMON),
    KnownError("BadRequest", "bad_request", Action.FAIL, _ARM_COMMON),
    KnownError("SkuNotAvailable", "bad_request", Action.FAIL, _ARM_COMMON + " (select a SKU the location offers)"),
    KnownError("MissingSubscriptionRegistration", "bad_request", Action.FAIL, _ARM_COMMON),
    KnownError("NoRegisteredProviderFound", "bad_request", Action.FAIL, _ARM_COMMON),
    KnownError("AuthorizationFailed", "bad_request", Action.FAIL, _ARM_COMMON),
    KnownError("LinkedAuthorizationFailed", "bad_request", Action.FAIL, _ARM_COMMON),
    KnownError("RequestDisallowedByPolicy", "bad_request", Action.FAIL, _ARM_COMMON),
    KnownError("RegionDoesNotAllowProvisioning", "bad_request", Action.FAIL, _ARM_COMMON),
    # Transient on ARM's side.
    KnownError("InternalServerError", "transient", Action.RETRY, _ARM_COMMON + " (retry the deployment)"),
    KnownError("AnotherOperationInProgress", "transient", Action.RETRY, _ARM_COMMON),
    # A deployment of the same name is still running (PUT: already deploying; DELETE: not yet deletable).
    KnownError("DeploymentActive", "in_progress", Action.IN_PROGRESS, _ARM_DEPLOYMENTS),
)
_BY_CODE = {row.code.lower(): row for row in TABLE}
# Which cause decides when several are present (module docstring).
_PRECEDENCE = ("history", "quota", "capacity", "throttled", "registry", "image", "bad_request", "not_found",
               "in_progress", "transient")


@dataclass(frozen=True)
class Verdict:
    """What to do about one error, the row that decided (None: by status), and every cause found."""

    action: Action
    row: KnownError | None
    causes: tuple[tuple[str, str], ...]

    @property
    def kind(self) -> str:
        return self.row.kind if self.row is not None else "unknown"


def known(code: str) -> KnownError | None:
    """The table's row for `code` (ARM codes are case-insensitive), None if it has none."""
    return _BY_CODE.get(code.lower())


def causes_of(error: Any) -> list[tuple[str, str]]:
    """Every (code, message) in an ARM error tree, the top level first, then its details depth-first."""
    if error is None:
        return []
    found = [(str(getattr(error, "code", None) or ""), str(getattr(error, "message", None) or ""))]
    for detail in getattr(error, "details", None) or []:
        found.extend(causes_of(detail))
    return found


def classify(error: Any, status: int = 0, deploying: bool = False) -> Verdict:
    """What to do about an ARM error (`error` an SDK ODataV4Format/ErrorDetail, or None) answered with
    HTTP `status` (0: read from a failed deployment, no status). A WAIT outside a deployment is a RETRY.
    """
    causes = tuple(causes_of(error))
    rows = _deciding_rows(error)
    if rows:
        row = min(rows, key=lambda r: _PRECEDENCE.index(r.kind))
        action = row.action
    else:
        row, action = None, _by_status(status, deploying)
    if action is Action.WAIT and not deploying:
        action = Action.RETRY
    return Verdict(action, row, causes)


def _deciding_rows(error: Any) -> list[KnownError]:
    """The rows of the innermost known codes: a code whose details hold a known code is only their
    wrapper (`InvalidTemplateDeployment` around `ContainerGroupQuotaReached` is a quota)."""
    if error is None:
        return []
    inner = [row for detail in (getattr(error, "details", None) or []) for row in _deciding_rows(detail)]
    own = known(str(getattr(error, "code", None) or ""))
    return inner or ([own] if own is not None else [])


def _by_status(status: int, deploying: bool) -> Action:
    """A code the table does not know: 429 on a create is ACI's create quota (a wait), 408/429/5xx are
    transient, 404 is not found, any other 4xx on a deployment is a refusal for good."""
    if status == 429 and deploying:
        return Action.WAIT
    if status in (408, 429) or status >= 500:
        return Action.RETRY
    if status == 404:
        return Action.NOT_FOUND
    return Action.FAIL


def root_causes(error: Any) -> list[tuple[str, str]]:
    """The innermost (code, message) pairs of an ARM error: what a run's reason quotes. A failed
    deployment's own error only says `DeploymentFailed` ("At least one resource deployment operation
    failed"); its details say why."""
    if error is None:
        return []
    inner = [cause for detail in (getattr(error, "details", None) or []) for cause in root_causes(detail)]
    return inner or [(str(getattr(error, "code", None) or ""), str(getattr(error, "message", None) or ""))]


def scrub(text: str, secrets: Iterable[str], limit: int = MAX_REASON_CHARS) -> str:
    """`text` as one bounded line with secret values and SAS signatures removed: ARM and ACI error text
    can echo what the request carried, and it is stored as a run's reason and sent to telemetry."""
    line = " ".join(redact(text, secrets).split())
    return _SAS_SIGNATURE.sub(r"\1=***", line)[:limit]
