"""The janitor: every run ends in a recorded terminal state with its containers removed, and old
runs expire.

Each tick reads only bounded things: the container groups this app owns (by tag on ACI, by record
for the local executor), the journal partitions of those runs, the index's active-steps
partition, the poison queues, and at most `RETENTION_BATCH` expired runs. So a tick costs the
same with a hundred or a million past runs. Using the journal it decides:
- a group still running past its run's deadline: the run `timed_out`, the group removed;
- a group that stopped without its result arriving within the grace period: the run `failed`
  with the exit code, the group removed (the removal archives its log);
- a group of a finished run that is still there (its removal kept failing): removed again;
- a group with no journal at all, past its deadline: removed (an orphan);
- a step whose deployment ARM accepted and then failed: for want of quota it waits in line again,
  otherwise the run `failed` with ARM's error;
- an active step past its deadline whose group never appeared: the run `timed_out`;
- a message in a `-poison` queue: its run `failed` with the reason (the first outcome wins), if the
  message speaks for that run (loadme.trust: a result with its token, a step message the journal backs);
- runs older than RUN_RETENTION_DAYS: their journal rows, index rows and logs deleted.
It reports each poison queue's depth and oldest message age and the groups alive (telemetry).
Every decision is idempotent: terminal rows are insert-only and removals are idempotent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from loadme import telemetry
from loadme.context import Context
from loadme.deploy import redeploy_later
from loadme.envelope import RemovalMessage, parse_time
from loadme.executors import OwnedGroup
from loadme.executors.arm_errors import scrub
from loadme.journal import Event, EventType, Journal, RunState
from loadme.names import poison_queue
from loadme.poison import KINDS, MAX_PEEK, PoisonStats, decode_poisoned, poison_stats, poisoned_reason
from loadme.slot import Slot
from loadme.trust import untrusted_reason

logger = logging.getLogger(__name__)

RETENTION_BATCH = 100  # expired runs deleted per tick at most


@dataclass
class JanitorReport:
    """What one sweep did."""

    removals: list[RemovalMessage] = field(default_factory=list)
    timed_out: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    poison: list[PoisonStats] = field(default_factory=list)
    groups_alive: int = 0
    groups_past_deadline: int = 0
    expired: int = 0


def sweep(ctx: Context) -> JanitorReport:
    """One janitor pass. Raises on storage or platform errors (the next tick tries again)."""
    report = JanitorReport()
    now = ctx.clock()
    groups = ctx.executor.list_owned()
    report.groups_alive = len(groups)
    for group in groups:
        report.groups_past_deadline += now > parse_time(group.deadline)
        _check_group(ctx, group, now, report)
    _check_groupless_steps(ctx, now, {g.name for g in groups}, report)
    _reconcile_admission(ctx, now, {g.name for g in groups})
    _record_poisoned_runs(ctx, report)
    report.expired = expire_old_runs(ctx)
    report.poison = poison_stats(ctx)
    for stats in report.poison:
        telemetry.emit(telemetry.POISON_QUEUE, "poison queue %s: %d message(s)", stats.queue, stats.depth,
                       queue=stats.queue, depth=stats.depth, oldest_age_seconds=stats.oldest_age_seconds)
    telemetry.emit(
        telemetry.JANITOR_TICK, "janitor: %d group(s) alive (%d past deadline), %d removal(s), %d timed out, "
        "%d failed, %d expired run(s); poison queues: %s", report.groups_alive, report.groups_past_deadline,
        len(report.removals), len(report.timed_out), len(report.failed), report.expired,
        ", ".join(f"{p.queue}={p.depth} (oldest {_age(p.oldest_age_seconds)})" for p in report.poison),
        groups_alive=report.groups_alive, groups_past_deadline=report.groups_past_deadline,
        removals=len(report.removals), timed_out=len(report.timed_out), failed=len(report.failed),
    )
    return report


def _check_group(ctx: Context, group: OwnedGroup, now: datetime, report: JanitorReport) -> None:
    log = {"run_id": group.run_id, "step": group.step}
    journal = ctx.journal
    events = {(e.step, e.event): e for e in journal.events(group.run_id)}
    deadline = parse_time(group.deadline)
    if (0, EventType.REQUESTED) not in events:
        if now > deadline:
            logger.warning("janitor: removing orphan group %s (no journal)", group.name, extra=log)
            report.removals.append(RemovalMessage(group.run_id, group.step, "orphan"))
        return
    if (group.step, EventType.REMOVED) in events:
        # Removed already, yet it is back or still here: delete it again.
        report.removals.append(RemovalMessage(group.run_id, group.step, "janitor"))
        return
    terminal = events.get((0, EventType.TERMINAL))
    if terminal is not None:
        if now - parse_time(terminal.at) > timedelta(seconds=ctx.settings.result_grace_seconds):
            logger.warning("janitor: run is over but group %s is still there; removing it", group.name, extra=log)
            report.removals.append(RemovalMessage(group.run_id, group.step, "janitor"))
        return
    if (group.step, EventType.RESULT) in events:
        return  # stage2 is finishing this step
    status = ctx.executor.state(group.name)
    if status.state in ("running", "pending") and now > deadline:
        if journal.finish(group.run_id, RunState.TIMED_OUT,
                          f"step {group.step} still running at the deadline {group.deadline}", step=group.step):
            report.timed_out.append(group.run_id)
            logger.warning("janitor: run timed out; removing %s", group.name, extra=log)
        report.removals.append(RemovalMessage(group.run_id, group.step, "timed_out"))
    elif status.state in ("terminated", "failed"):
        finished = status.finished_at or deadline
        if now - finished < timedelta(seconds=ctx.settings.result_grace_seconds):
            return  # its result may still be on the way
        # The runner exits 0 even when its post failed (a non-zero exit may make ACI run the job
        # again), so the container's exit code says only whether the runner itself crashed, not how
        # the job ended: the reason does not read it as the job's.
        exit_text = ("no exit code" if status.exit_code is None
                     else f"exit code {status.exit_code}, which is the runner's, not the job's")
        if journal.finish(group.run_id, RunState.FAILED,
                          f"step {group.step} container stopped without posting a result (its job's outcome "
                          f"is unknown; the platform reports {exit_text})",
                          step=group.step, exit_code=status.exit_code):
            report.failed.append(group.run_id)
            logger.warning("janitor: container stopped without a result (%s); run failed", exit_text, extra=log)
        report.removals.append(RemovalMessage(group.run_id, group.step, "no_result"))


def _check_groupless_steps(ctx: Context, now: datetime, owned: set[str], report: JanitorReport) -> None:
    """Active steps whose group is not there: the owned-group pass cannot see them; the index's
    active steps can. A deployment ARM accepted and then failed: for want of quota or capacity, or
    throttled (loadme.executors.arm_errors), the step waits in line again, but only until its
    deadline: past it the run times out with ARM's reason, so a region that keeps refusing cannot
    hold a step for ever. For any other reason (a full deployment history included) the run fails
    with ARM's error. A group that never appeared by the deadline: the run times out."""
    journal = ctx.journal
    for active in journal.index.active():
        if active.container_group in owned:
            continue
        failure = ctx.executor.failed_deployment(active.container_group)
        past_deadline = now > parse_time(active.deadline)
        if failure is None and not past_deadline:
            continue
        log = {"run_id": active.run_id, "step": active.step}
        if journal.get(active.run_id, active.step, EventType.REMOVED) is not None:
            journal.index.deactivate(active.run_id, active.step)  # a removal that ended before its row went
            continue
        reason = scrub(failure.reason, ctx.settings.secret_values) if failure is not None else ""
        if failure is not None and failure.quota and not past_deadline and journal.terminal(active.run_id) is None:
            if redeploy_later(ctx, active, reason):
                logger.warning("janitor: the deployment failed for want of capacity; the step waits again (%s)",
                               reason, extra=log)
            continue
        if failure is not None and failure.quota:
            if journal.finish(active.run_id, RunState.TIMED_OUT,
                              f"step {active.step} still waiting for capacity at the deadline: {reason}",
                              step=active.step):
                report.timed_out.append(active.run_id)
                logger.warning("janitor: deadline passed waiting for capacity: %s", reason, extra=log)
            report.removals.append(RemovalMessage(active.run_id, active.step, "timed_out"))
            continue
        if failure is not None:
            if journal.finish(active.run_id, RunState.FAILED,
                              f"step {active.step} deployment failed: {reason}", step=active.step):
                report.failed.append(active.run_id)
                logger.error("janitor: the deployment failed: %s", reason, extra=log)
            report.removals.append(RemovalMessage(active.run_id, active.step, "deploy_failed"))
            continue
        if ctx.executor.state(active.container_group).state != "missing":
            continue  # it appeared since the list: the next tick sees it as an owned group
        if journal.finish(active.run_id, RunState.TIMED_OUT,
                          f"no container group for step {active.step} at the deadline (deployment failed?)",
                          step=active.step):
            report.timed_out.append(active.run_id)
            logger.warning("janitor: step never got a container group; run timed out", extra=log)
        report.removals.append(RemovalMessage(active.run_id, active.step, "no_group"))


def _reconcile_admission(ctx: Context, now: datetime, owned: set[str]) -> None:
    """Release grants whose step ended without giving them back (a crash between two writes), and
    take out of the waiting line steps whose run ended or whose deadline passed while they waited.
    Bounded by what is in use and what waits now, not by history."""
    journal, admission = ctx.journal, ctx.admission
    grace = timedelta(seconds=ctx.settings.result_grace_seconds)
    for group in admission.grants():
        slot = Slot.from_group_name(group)
        if slot is None or group in owned:
            continue
        run_id, step = slot.run_id, slot.step
        terminal = journal.terminal(run_id)
        ended_long_ago = terminal is not None and now - parse_time(terminal.at) > grace
        if ended_long_ago or journal.get(run_id, step, EventType.REMOVED) is not None:
            admission.release(group)
            logger.warning("janitor: released the capacity step %d still held", step,
                           extra={"run_id": run_id, "step": step})
    for order in admission.waiting():
        waiting = Slot.from_order_key(order)
        if waiting is None:  # no slot's: nothing admits it, and it would stand in everyone's way
            logger.error("janitor: took %r out of the waiting line: not a step's place in it", order[:80])
            admission.forget(order)
            continue
        run_id, step = waiting.run_id, waiting.step
        requested = journal.requested(run_id)
        if requested is None or journal.terminal(run_id) is not None:
            admission.forget(order)
        elif now > _waiting_deadline(journal, requested, step):
            journal.finish(run_id, RunState.TIMED_OUT, "deadline passed while waiting for capacity", step=step)
            admission.forget(order)


def _waiting_deadline(journal: Journal, requested: Event, step: int) -> datetime:
    """A waiting step's deadline: the run's, moved on by every wait for capacity (loadme.deploy._wait)."""
    waiting = journal.get(requested.run_id, step, EventType.WAITING)
    deadline = waiting.details.get("deadline") if waiting is not None else None
    return parse_time(str(deadline or requested.details["deadline"]))


def _record_poisoned_runs(ctx: Context, report: JanitorReport) -> None:
    from azure.core.exceptions import ResourceNotFoundError

    for queue in KINDS:
        try:
            peeked = list(ctx.storage.raw_queue(poison_queue(queue)).peek_messages(max_messages=MAX_PEEK))
        except ResourceNotFoundError:
            continue  # no poison queue yet: nothing was poisoned
        for message in peeked:
            poisoned, _ = decode_poisoned(queue, message.content)
            if poisoned is None:
                continue  # no run to attribute it to; counted in the poison stats
            untrusted = untrusted_reason(ctx, poisoned)
            if untrusted:  # a forged message names a run of its sender's choosing: leave that run alone
                logger.warning("janitor: poisoned %s message left out: %s", queue, untrusted,
                               extra={"run_id": poisoned.run_id, "step": poisoned.step})
                continue
            if ctx.journal.finish(poisoned.run_id, RunState.FAILED, poisoned_reason(queue, poisoned.step),
                                  step=poisoned.step):
                report.failed.append(poisoned.run_id)
                logger.error("janitor: %s message poisoned; run failed", queue,
                             extra={"run_id": poisoned.run_id, "step": poisoned.step})


def expire_old_runs(ctx: Context, budget: int = RETENTION_BATCH) -> int:
    """Delete the journal rows, index rows and logs of runs created more than RUN_RETENTION_DAYS ago,
    oldest day first, at most `budget` runs; returns how many. Resumes where it stopped."""
    index = ctx.journal.index
    cutoff = (ctx.clock() - timedelta(days=ctx.settings.run_retention_days)).date()
    day = index.oldest_day()
    expired = 0
    while day is not None and day < cutoff and expired < budget:
        runs = index.day(day, budget - expired)
        for run in runs:
            ctx.journal.forget(run.run_id)
            for blob in ctx.storage.logs.list_blobs(name_starts_with=f"{run.run_id}/"):
                ctx.storage.logs.delete_blob(blob.name)
            index.forget(run)
            expired += 1
        if expired < budget:  # the day is empty now
            day += timedelta(days=1)
            index.set_oldest_day(day)
    if expired:
        logger.info("janitor: %d run(s) older than %d days expired", expired, ctx.settings.run_retention_days)
    return expired


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.0f}s"
