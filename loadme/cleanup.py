"""`remove_infra`: archive a step's container log to blob storage, then delete its group."""

from __future__ import annotations

import logging
import time

from loadme import journal as j
from loadme.context import Context
from loadme.envelope import RemovalMessage
from loadme.names import log_blob_name
from loadme.variables import redact

logger = logging.getLogger(__name__)

# After a result the runner exits within moments; wait this long for it so the log is complete.
SETTLE_SECONDS = 10.0


def remove_step(ctx: Context, msg: RemovalMessage, settle_seconds: float = SETTLE_SECONDS) -> bool:
    """Archive logs and delete the group; False when the step was already removed.

    Raises on storage or platform errors so the host retries (every part is idempotent).
    """
    log = {"run_id": msg.run_id, "step": msg.step}
    if ctx.journal.get(msg.run_id, msg.step, j.REMOVED) is not None:
        logger.info("step already removed", extra=log)
        return False
    executor = ctx.executor
    if msg.reason == "finished":
        give_up = time.monotonic() + settle_seconds
        while executor.state(msg.container_group).state in ("running", "pending") and time.monotonic() < give_up:
            time.sleep(0.2)
    if ctx.journal.get(msg.run_id, msg.step, j.LOGS_ARCHIVED) is None:
        # Archive once: after a partial earlier attempt the group may be gone and its log with it.
        text = redact(executor.logs(msg.container_group), ctx.settings.secret_values)
        blob = log_blob_name(msg.run_id, msg.step)
        ctx.storage.logs.upload_blob(blob, text.encode(), overwrite=True)
        ctx.journal.record(msg.run_id, msg.step, j.LOGS_ARCHIVED, blob=blob, bytes=len(text.encode()))
    existed = executor.delete(msg.container_group)
    ctx.journal.record(msg.run_id, msg.step, j.REMOVED, container_group=msg.container_group,
                       existed=existed, reason=msg.reason)
    logger.info("container group %s removed (%s)", msg.container_group,
                "deleted" if existed else "already gone", extra=log)
    return True
