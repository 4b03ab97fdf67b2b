"""The janitor: every run ends in a recorded terminal state with its containers removed.

On each tick it looks at every container group this app owns (by tag on ACI, by record for the
local executor) and at the poison queues, and, using the journal:
- a group still running past its run's deadline: records `timed_out`, removes it;
- a group that stopped without its result arriving within the grace period: records `failed`
  with the exit code, removes it (the removal archives its logs);
- a group of a finished run that is still there (its removal kept failing): removes it again;
- a group with no journal at all, past its deadline: removes it (an orphan);
- a step past its deadline whose group never appeared: records `timed_out`;
- a message in a `-poison` queue: records its run `failed` with the reason (first outcome wins);
and it reports each poison queue's depth and oldest message age in a log line.
Every decision is idempotent: journal rows are insert-only and removals are idempotent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from loadme import journal as j
from loadme.context import Context
from loadme.envelope import Message, RemovalMessage, ResultMessage, StepMessage, decode_queue_text, parse_time
from loadme.errors import EnvelopeError
from loadme.executors import OwnedGroup
from loadme.names import (
    INITJOB_QUEUE,
    REMOVEINFRA_QUEUE,
    STAGE2_QUEUE,
    TRIGGER_QUEUES,
    container_group_name,
    poison_queue,
)

logger = logging.getLogger(__name__)

MAX_PEEK = 32  # the Queue service's peek limit
GROUPLESS_LOOKBACK = timedelta(hours=1)
_KINDS: dict[str, type[Message]] = {
    INITJOB_QUEUE: StepMessage, STAGE2_QUEUE: ResultMessage, REMOVEINFRA_QUEUE: RemovalMessage,
}


@dataclass(frozen=True)
class PoisonStats:
    """One poison queue: how many messages and how old the oldest one is."""

    queue: str
    depth: int
    oldest_age_seconds: float | None

    def as_dict(self) -> dict[str, Any]:
        return {"depth": self.depth, "oldest_age_seconds": self.oldest_age_seconds}


@dataclass
class JanitorReport:
    """What one sweep did."""

    removals: list[RemovalMessage] = field(default_factory=list)
    timed_out: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    poison: list[PoisonStats] = field(default_factory=list)


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


def sweep(ctx: Context) -> JanitorReport:
    """One janitor pass. Raises on storage or platform errors (the next tick tries again)."""
    report = JanitorReport()
    now = ctx.clock()
    for group in ctx.executor.list_owned():
        _check_group(ctx, group, now, report)
    _check_groupless_steps(ctx, now, report)
    _record_poisoned_runs(ctx, report)
    report.poison = poison_stats(ctx)
    logger.info(
        "janitor: %d removal(s), %d timed out, %d failed; poison queues: %s",
        len(report.removals), len(report.timed_out), len(report.failed),
        ", ".join(f"{p.queue}={p.depth} (oldest {_age(p.oldest_age_seconds)})" for p in report.poison),
    )
    return report


def _check_group(ctx: Context, group: OwnedGroup, now: datetime, report: JanitorReport) -> None:
    log = {"run_id": group.run_id, "step": group.step}
    journal = ctx.journal
    events = {(e.step, e.event): e for e in journal.events(group.run_id)}
    deadline = parse_time(group.deadline)
    if (0, j.REQUESTED) not in events:
        if now > deadline:
            logger.warning("janitor: removing orphan group %s (no journal)", group.name, extra=log)
            report.removals.append(_removal(group, "orphan"))
        return
    if (group.step, j.REMOVED) in events:
        # Removed already, yet it is back or still here: delete it again.
        report.removals.append(_removal(group, "janitor"))
        return
    if (0, j.TERMINAL) in events:
        if now - parse_time(events[(0, j.TERMINAL)].at) > timedelta(seconds=ctx.settings.result_grace_seconds):
            logger.warning("janitor: run is over but group %s is still there; removing it", group.name, extra=log)
            report.removals.append(_removal(group, "janitor"))
        return
    if (group.step, j.RESULT) in events:
        return  # stage2 is finishing this step
    status = ctx.executor.state(group.name)
    if status.state in ("running", "pending") and now > deadline:
        if journal.record(group.run_id, 0, j.TERMINAL, state="timed_out", step_ended=group.step,
                          reason=f"step {group.step} still running at the deadline {group.deadline}"):
            report.timed_out.append(group.run_id)
            logger.warning("janitor: run timed out; removing %s", group.name, extra=log)
        report.removals.append(_removal(group, "timed_out"))
    elif status.state in ("terminated", "failed"):
        finished = status.finished_at or deadline
        if now - finished < timedelta(seconds=ctx.settings.result_grace_seconds):
            return  # its result may still be on the way
        exit_text = "without an exit code" if status.exit_code is None else f"with exit code {status.exit_code}"
        if journal.record(group.run_id, 0, j.TERMINAL, state="failed", exit_code=status.exit_code,
                          step_ended=group.step,
                          reason=f"step {group.step} container stopped {exit_text} without posting a result"):
            report.failed.append(group.run_id)
            logger.warning("janitor: container stopped %s without a result; run failed", exit_text, extra=log)
        report.removals.append(_removal(group, "no_result"))


def _check_groupless_steps(ctx: Context, now: datetime, report: JanitorReport) -> None:
    """Steps past their deadline whose group never appeared (e.g. a deployment that failed after
    ARM accepted it): the owned-group pass cannot see them, the journal can."""
    since = now - GROUPLESS_LOOKBACK  # ticks are minutes apart: an hour back sees every deadline once
    rows = ctx.storage.table.query_entities(
        "event eq @event and deadline ge @since and deadline lt @now",
        parameters={"event": j.DEPLOYING, "since": since.isoformat(), "now": now.isoformat()})
    for row in rows:
        run_id, step = str(row["PartitionKey"]), int(row["step"])
        journal = ctx.journal
        if journal.get(run_id, 0, j.TERMINAL) is not None or journal.get(run_id, step, j.REMOVED) is not None:
            continue
        group = container_group_name(run_id, step)
        if ctx.executor.state(group).state != "missing":
            continue  # the group exists: the owned-group pass deals with it
        if journal.record(run_id, 0, j.TERMINAL, state="timed_out", step_ended=step,
                          reason=f"no container group for step {step} at the deadline (deployment failed?)"):
            report.timed_out.append(run_id)
            logger.warning("janitor: step never got a container group; run timed out",
                           extra={"run_id": run_id, "step": step})
        deadline = str(row["deadline"])
        report.removals.append(_removal(OwnedGroup(group, run_id, step, deadline), "no_group"))


def _record_poisoned_runs(ctx: Context, report: JanitorReport) -> None:
    from azure.core.exceptions import ResourceNotFoundError

    for queue, kind in _KINDS.items():
        try:
            peeked = list(ctx.storage.raw_queue(poison_queue(queue)).peek_messages(max_messages=MAX_PEEK))
        except ResourceNotFoundError:
            continue  # no poison queue yet: nothing was poisoned
        for message in peeked:
            try:
                poisoned = decode_queue_text(message.content, kind)
            except EnvelopeError:
                continue  # no run to attribute it to; counted in the poison stats
            if ctx.journal.record(poisoned.run_id, 0, j.TERMINAL, state="failed", step_ended=poisoned.step,
                                  reason=f"{queue} message for step {poisoned.step} was poisoned"):
                report.failed.append(poisoned.run_id)
                logger.error("janitor: %s message poisoned; run failed", queue,
                             extra={"run_id": poisoned.run_id, "step": poisoned.step})


def _removal(group: OwnedGroup, reason: str) -> RemovalMessage:
    return RemovalMessage(
        run_id=group.run_id, step=group.step, attempt=1, created_at=group.deadline, deadline=group.deadline,
        variables={}, container_group=group.name, reason=reason,
    )


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.0f}s"
