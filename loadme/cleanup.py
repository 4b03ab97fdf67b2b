"""`remove_infra`: make sure a step's log is archived, then delete its container group and the
record of its deployment (template-spec mode). No waiting.

A container that reported uploaded its own whole log before posting its result (the runner,
loadme.contract), so the normal path costs one platform request: the delete. Only a container
that never reported (timed out, cancelled, crashed, silent) or whose upload failed has its log read
from the platform first. The ARM requests per run are therefore fixed, whatever the platform's
instance view says about the container at that moment: in template-spec mode one more, the DELETE of
the step's deployment, so the resource group's deployment history stays as small as the runs alive.

The platform keeps little: 16 KB or 1,000 lines of a stopped container, 4 MB of a running one
(https://learn.microsoft.com/azure/container-instances/container-instances-resource-and-quota-limits),
so its text goes in under a heading that says so. The runner uploads its log as it goes: when that
partial log exists it is kept (it holds the whole output up to its last upload, up to 64 MiB) and
the platform's tail is added after it as one more block, for the last seconds it may lack.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from loadme.context import Context
from loadme.envelope import RemovalMessage
from loadme.journal import EventType
from loadme.slot import Slot
from loadme.variables import redact

if TYPE_CHECKING:
    from azure.storage.blob import BlobClient

logger = logging.getLogger(__name__)


PLATFORM_HEADING = ("[loadme] below: the platform's log of this container, which holds only its last 16 KB or "
                    "1,000 lines once it stopped (4 MB while it runs): earlier output may be missing\n")
PLATFORM_BLOCK = "platform"  # padded to the length of the runner's block ids
ARCHIVE_ATTEMPTS = 5


def archive_platform_log(blob: BlobClient, data: bytes) -> str:
    """Archive the platform's log `data` into `blob`; returns
    the journal's `source`: `runner+platform` when the runner's partial upload was there and is
    kept, with `data` committed after it as one block (again on a retry, never twice), else
    `platform` (the blob then holds `data` alone).

    A runner still alive (a step removed at its deadline) commits its own block list every few
    seconds, and a commit discards every uncommitted block it does not name: ours, staged a moment
    before, then makes our commit `InvalidBlockList` (Put Block List: "any uncommitted blocks
    ... will be garbage collected",
    https://learn.microsoft.com/rest/api/storageservices/put-block-list#remarks). That is tried
    again from a fresh block list a few times; past that the error goes to the host, which retries.
    """
    from azure.core.exceptions import HttpResponseError

    for attempt in range(1, ARCHIVE_ATTEMPTS + 1):
        try:
            return _archive_once(blob, data)
        except HttpResponseError as exc:
            if getattr(exc, "error_code", None) != "InvalidBlockList" or attempt == ARCHIVE_ATTEMPTS:
                raise
            logger.info("the runner committed its log while the platform's was archived; again (%d)", attempt)
    raise AssertionError("unreachable")


def _archive_once(blob: BlobClient, data: bytes) -> str:
    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.blob import BlobBlock, ContentSettings

    try:
        committed, _ = blob.get_block_list("committed")
    except ResourceNotFoundError:
        committed = []
    width = len(committed[0].id) if committed else 0
    platform_id = PLATFORM_BLOCK.ljust(width, "0")[:width]
    kept = [b for b in committed if b.id != platform_id]
    if not kept:
        blob.upload_blob(data, overwrite=True)
        return "platform"
    blob.stage_block(platform_id, data)
    blob.commit_block_list([BlobBlock(block_id=b.id) for b in kept] + [BlobBlock(block_id=platform_id)],
                           content_settings=ContentSettings(content_type="text/plain; charset=utf-8"))
    return "runner+platform"


def remove_step(ctx: Context, msg: RemovalMessage) -> bool:
    """Archive the log if the container did not, and delete the group; False when already removed.

    Raises on storage or platform errors so the host retries (every part is idempotent).
    """
    log = {"run_id": msg.run_id, "step": msg.step}
    journal, slot = ctx.journal, Slot.of(msg)
    if journal.get(msg.run_id, msg.step, EventType.REMOVED) is not None:
        ctx.admission.release(slot.group_name)  # in case a crash came in between
        logger.info("step already removed", extra=log)
        return False
    executor = ctx.executor
    group = slot.group_name
    if journal.get(msg.run_id, msg.step, EventType.LOGS_ARCHIVED) is None:
        blob = slot.blob_name
        result = journal.get(msg.run_id, msg.step, EventType.RESULT)
        if result is not None and result.details.get("log_uploaded"):
            journal.record(msg.run_id, msg.step, EventType.LOGS_ARCHIVED, blob=blob, source="runner")
        else:
            # Archive once: after a partial earlier attempt the group may be gone and its log with it.
            text = PLATFORM_HEADING + redact(executor.logs(group), ctx.settings.secret_values)
            source = archive_platform_log(ctx.storage.logs.get_blob_client(blob), text.encode())
            journal.record(msg.run_id, msg.step, EventType.LOGS_ARCHIVED, blob=blob, bytes=len(text.encode()),
                           source=source)
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
