"""Why a delivery failed, kept with the run: the poison list shows it, the run's timeline too.

The host retries a message whose function raised and, after `maxDequeueCount` deliveries, moves
it to `<queue>-poison`; the exception itself only reaches the host's log. `failures_noted` records
each failed delivery's error (redacted, bounded) in the run's journal before the exception goes on
to the host, so "why is this run stuck / what poisoned it" has an answer next to the run.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

from loadme.context import get_context
from loadme.envelope import Message
from loadme.trust import may_note_failure
from loadme.variables import redact

logger = logging.getLogger(__name__)
MAX_ERROR_CHARS = 1000
_SAS_SIGNATURE = re.compile(r"(?i)\b(sig|skoid|sktid)=[^&\s\"']+")


def describe(exc: BaseException, secrets: list[str]) -> str:
    """One line naming the error, with secret values and SAS signatures removed."""
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    text = _SAS_SIGNATURE.sub(r"\1=***", redact(text, secrets))
    return text[:MAX_ERROR_CHARS]


@contextmanager
def failures_noted(queue: str, message: Message, delivery: int | None) -> Iterator[None]:
    """Run a handler; if it raises, note the error on the message's run, then let it propagate.

    Only a message that speaks for its run is noted (loadme.trust.may_note_failure): a forged one
    names a run of the sender's choosing, which its failures must not touch.
    """
    try:
        yield
    except Exception as exc:
        try:
            ctx = get_context()
            if may_note_failure(ctx, message, exc):
                ctx.journal.note_failure(message.run_id, message.step, queue,
                                         describe(exc, ctx.settings.secret_values), delivery)
            else:
                logger.warning("failed delivery not noted: the %s message does not speak for its run", queue,
                               extra={"run_id": message.run_id, "step": message.step})
        except Exception as note_error:  # noqa: BLE001 - the handler's own error is the one that matters
            logger.warning("could not note the failed delivery: %s", note_error,
                           extra={"run_id": message.run_id, "step": message.step})
        raise
