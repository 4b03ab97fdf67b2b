"""Poison queues: what is in them, and what an operator does about it (requeue, drop).

A message lands in `<queue>-poison` after `maxDequeueCount` failed deliveries (or at once when it
cannot be decoded). The janitor records its run `failed` ("... was poisoned"). An operator can:
- list a poison queue: each message with its run, step, the error of its last failed delivery
  (recorded by the handler, `Journal.note_failure`) or why it cannot be decoded, and its age;
- requeue a message: it goes back to its queue; if the janitor had failed its run only because of
  this poisoning, the run is reopened, so the retry can finish it;
- drop a message: it is deleted; its run, if still open, is recorded `failed` with the reason.
A message that does not speak for the run it names (loadme.trust: a forged one) is requeued or
dropped without touching that run.
Both are idempotent (a repeat returns the first outcome) and recorded in the journal's operations
partition and the run's timeline.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from loadme.context import Context
from loadme.envelope import Message, RemovalMessage, ResultMessage, StepMessage, decode_queue_text
from loadme.errors import EnvelopeError, RequestError
from loadme.journal import EventType, RunState
from loadme.names import INITJOB_QUEUE, REMOVEINFRA_QUEUE, STAGE2_QUEUE, TRIGGER_QUEUES, poison_queue
from loadme.trust import untrusted_reason

logger = logging.getLogger(__name__)

MAX_PEEK = 32  # the Queue service returns at most 32 messages per peek or receive
KINDS: dict[str, type[Message]] = {
    INITJOB_QUEUE: StepMessage, STAGE2_QUEUE: ResultMessage, REMOVEINFRA_QUEUE: RemovalMessage,
}


def poisoned_reason(queue: str, step: int) -> str:
    """The reason the janitor records for a run whose message landed in `queue`'s poison queue."""
    return f"{queue} message for step {step} was poisoned"


@dataclass(frozen=True)
class PoisonStats:
    """One poison queue: how many messages and how old the oldest one is."""

    queue: str
    depth: int
    oldest_age_seconds: float | None

    def as_dict(self) -> dict[str, Any]:
        return {"depth": self.depth, "oldest_age_seconds": self.oldest_age_seconds}


def poison_stats(ctx: Context) -> list[PoisonStats]:
    """Depth and oldest-message age of every poison queue (missing queues count as empty)."""
    from azure.core.exceptions import ResourceNotFoundError

    now = ctx.clock()
    stats = []
    for queue in TRIGGER_QUEUES:
        client = ctx.storage.raw_queue(poison_queue(queue))
        try:
            depth = int(client.get_queue_properties().approximate_message_count or 0)
            peeked = list(client.peek_messages(max_messages=1)) if depth else []
        except ResourceNotFoundError:
            depth, peeked = 0, []
        age = (now - peeked[0].inserted_on).total_seconds() if peeked and peeked[0].inserted_on else None
        stats.append(PoisonStats(poison_queue(queue), depth, age))
    return stats


def check_queue(queue: str) -> str:
    """A trigger queue named in a URL. Raises RequestError (404) for anything else."""
    if queue not in TRIGGER_QUEUES:
        raise RequestError(404, f"no poison queue for {queue!r}; the queues are {', '.join(TRIGGER_QUEUES)}")
    return queue


def decode_poisoned(queue: str, text: str) -> tuple[Message | None, str]:
    """The message a poison queue holds, or None and why it cannot be decoded."""
    try:
        return decode_queue_text(text, KINDS[queue]), ""
    except EnvelopeError as exc:
        return None, f"cannot be decoded: {exc}"


def list_poison(ctx: Context, queue: str) -> dict[str, Any]:
    """The messages in `queue`'s poison queue (the first 32), each with its run, error and age."""
    from azure.core.exceptions import ResourceNotFoundError

    client = ctx.storage.raw_queue(poison_queue(check_queue(queue)))
    try:
        depth = int(client.get_queue_properties().approximate_message_count or 0)
        peeked = list(client.peek_messages(max_messages=MAX_PEEK))
    except ResourceNotFoundError:
        depth, peeked = 0, []
    now = ctx.clock()
    return {
        "queue": poison_queue(queue), "depth": depth, "truncated": depth > len(peeked),
        "messages": [_describe(ctx, queue, m, now) for m in peeked],
    }


def _describe(ctx: Context, queue: str, message: Any, now: datetime) -> dict[str, Any]:
    decoded, error = decode_poisoned(queue, message.content)
    run_id = decoded.run_id if decoded else None
    step = decoded.step if decoded else None
    if decoded is not None:
        failure = ctx.journal.failure(decoded.run_id, decoded.step, queue)
        error = failure.details.get("error", "") if failure else ""
        if not error:
            untrusted = untrusted_reason(ctx, decoded)
            error = (f"not backed by its run: {untrusted}" if untrusted
                     else "no failure was recorded (the host's log has it)")
    inserted = message.inserted_on
    return {
        "id": message.id, "kind": KINDS[queue].KIND, "run_id": run_id, "step": step, "error": error,
        "inserted_at": inserted.isoformat() if inserted else None,
        "age_seconds": (now - inserted).total_seconds() if inserted else None,
    }


def requeue(ctx: Context, queue: str, message_id: str) -> dict[str, Any]:
    """Put a poisoned message back on its queue (reopening its run if the poisoning ended it).

    Raises RequestError: 404 when no such message is or was there, 409 when it was dropped.
    """
    done = _previous(ctx, queue, message_id, "requeued")
    if done is not None:
        return done
    message = _take(ctx, queue, message_id)
    decoded, _ = decode_poisoned(queue, message.content)
    reopened = False
    if decoded is not None and not untrusted_reason(ctx, decoded):  # a forged message reopens no run
        reopened = ctx.journal.reopen(decoded.run_id, poisoned_reason(queue, decoded.step))
        ctx.journal.note(decoded.run_id, decoded.step, EventType.REQUEUED, queue=queue, message_id=message_id,
                         reopened=reopened)
    ctx.storage.raw_queue(queue).send_message(message.content)  # the text as it was: already base64
    ctx.storage.raw_queue(poison_queue(queue)).delete_message(message.id, message.pop_receipt)
    outcome = _outcome("requeued", queue, message_id, decoded, reopened=reopened)
    ctx.journal.index.record_operation(f"{queue}-{message_id}", outcome)
    logger.info("poison: message %s requeued to %s%s", message_id, queue, " (run reopened)" if reopened else "",
                extra={"run_id": outcome["run_id"], "step": outcome["step"]})
    return outcome


def drop(ctx: Context, queue: str, message_id: str) -> dict[str, Any]:
    """Delete a poisoned message; its run, if still open, ends `failed`.

    Raises RequestError: 404 when no such message is or was there, 409 when it was requeued.
    """
    done = _previous(ctx, queue, message_id, "dropped")
    if done is not None:
        return done
    message = _take(ctx, queue, message_id)
    decoded, _ = decode_poisoned(queue, message.content)
    if decoded is not None and not untrusted_reason(ctx, decoded):  # a forged message fails no run
        ctx.journal.finish(decoded.run_id, RunState.FAILED,
                           f"{queue} message for step {decoded.step} was dropped from {poison_queue(queue)}",
                           step=decoded.step)
        ctx.journal.note(decoded.run_id, decoded.step, EventType.DROPPED, queue=queue, message_id=message_id)
    ctx.storage.raw_queue(poison_queue(queue)).delete_message(message.id, message.pop_receipt)
    outcome = _outcome("dropped", queue, message_id, decoded)
    ctx.journal.index.record_operation(f"{queue}-{message_id}", outcome)
    logger.info("poison: message %s dropped from %s", message_id, poison_queue(queue),
                extra={"run_id": outcome["run_id"], "step": outcome["step"]})
    return outcome


def _outcome(action: str, queue: str, message_id: str, decoded: Message | None, **extra: Any) -> dict[str, Any]:
    return {"action": action, "queue": poison_queue(queue), "message_id": message_id,
            "run_id": decoded.run_id if decoded else None, "step": decoded.step if decoded else None, **extra}


def _previous(ctx: Context, queue: str, message_id: str, action: str) -> dict[str, Any] | None:
    """The outcome of an earlier identical call (idempotency), None if there was none.

    Raises RequestError (409) when the message was handled the other way.
    """
    check_queue(queue)
    earlier = ctx.journal.index.operation(f"{queue}-{message_id}")
    if earlier is None:
        return None
    if earlier["action"] != action:
        raise RequestError(409, f"message {message_id} was already {earlier['action']}")
    return earlier


def _take(ctx: Context, queue: str, message_id: str) -> Any:
    """Receive the one poison message with this id (the others are made visible again at once).

    Raises RequestError (404) when it is not among the messages there.
    """
    from azure.core.exceptions import ResourceNotFoundError

    client = ctx.storage.raw_queue(poison_queue(queue))
    try:
        received = list(client.receive_messages(messages_per_page=MAX_PEEK, max_messages=MAX_PEEK,
                                                visibility_timeout=30))
    except ResourceNotFoundError:
        received = []
    found = None
    for message in received:
        if message.id == message_id:
            found = message
        else:
            client.update_message(message.id, message.pop_receipt, visibility_timeout=0)
    if found is None:
        raise RequestError(404, f"no message {message_id!r} in {poison_queue(queue)} (is it among its first "
                                f"{MAX_PEEK}? list them with GET /api/poison/{queue})")
    return found
