"""`remove_infra`: make sure a step's log is archived, then delete its container group and the
record of its deployment (template-spec mode). No waiting.

A container that reported uploaded its own whole log before posting its result (the runner,
loadme.contract), so the normal path costs one platform request: the delete. Only a container
that never reported (timed out, cancelled, crashed, silent) or whose upload failed has its log read
from the platform first. The ARM requests per run are therefore fixed, whatever the platform's
instance view says about the container at that moment: in template-spec mode one more, the DELETE of
the step's deployment, so the resource group's deployment history stays as small as the runs alive.
"""

from __future__ import annotations

import logging

from loadme.context import Context
from loadme.envelope import RemovalMessage
from loadme.journal import EventType
from loadme.names import container_group_name, log_blob_name
from loadme.variables import redact

logger = logging.getLogger(__name__)


def remove_step(ctx: Context, msg: RemovalMessage) -> bool:
    """Archive the log if the container did not, and delete the group; False when already removed.

    Raises on storage or platform errors so the host retries (every part is idempotent).
    """
    log = {"run_id": msg.run_id, "step": msg.step}
    journal = ctx.journal
    if journal.get(msg.run_id, msg.step, EventType.REMOVED) is not None:
        ctx.admission.release(container_group_name(msg.run_id, msg.step))  # in case a crash came in between
        logger.info("step already removed", extra=log)
        return False
    executor = ctx.executor
    group = container_group_name(msg.run_id, msg.step)
    if journal.get(msg.run_id, msg.step, EventType.LOGS_ARCHIVED) is None:
        blob = log_blob_name(msg.run_id, msg.step)
        result = journal.get(msg.run_id, msg.step, EventType.RESULT)
        if result is not None and result.details.get("log_uploaded"):
            journal.record(msg.run_id, msg.step, EventType.LOGS_ARCHIVED, blob=blob, source="runner")
        else:
            # Archive once: after a partial earlier attempt the group may be gone and its log with it.
            text = redact(executor.logs(group), ctx.settings.secret_values)
            ctx.storage.logs.upload_blob(blob, text.encode(), overwrite=True)
            journal.record(msg.run_id, msg.step, EventType.LOGS_ARCHIVED, blob=blob, bytes=len(text.encode()),
                           source="platform")
    existed = executor.delete(group)
    # Then its deployment record (ACI template-spec mode; 404 = already deleted): ARM keeps 800 per
    # resource group and refuses every deployment past that, so one left per step would stop all runs.
    deployment_deleted = executor.delete_deployment(group)
    journal.record(msg.run_id, msg.step, EventType.REMOVED, container_group=group,
                   existed=existed, deployment_deleted=deployment_deleted, reason=msg.reason)
    journal.index.deactivate(msg.run_id, msg.step)
    ctx.admission.release(group)
    logger.info("container group %s removed (%s)", group,
                "deleted" if existed else "already gone", extra=log)
    return True
