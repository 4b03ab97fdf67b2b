"""`stage2`: accept a container's result once, merge its variables, and decide what comes next.

A result is accepted only with the right token for its run and step, only for a step that was
deployed, and only once. A redelivery of the very message already accepted re-emits the same
follow-up messages (their consumers are idempotent) until the step's cleanup is done, so a crash
between journaling and sending loses nothing; any other repeat is a replay and is rejected.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

from loadme.context import Context
from loadme.envelope import RemovalMessage, ResultMessage, StepMessage, StepPlan, bounded_tail
from loadme.errors import SecretInOutput, VariableError
from loadme.journal import Event, EventType, RunState
from loadme.runs import reserved_variables
from loadme.slot import Slot
from loadme.tokens import verify_result_token
from loadme.variables import redact

logger = logging.getLogger(__name__)


@dataclass
class FollowUps:
    """Messages `stage2` sends on: the next step to `initjob`, removals to `removeinfra`."""

    next_steps: list[StepMessage] = field(default_factory=list)
    removals: list[RemovalMessage] = field(default_factory=list)


def accept_result(ctx: Context, msg: ResultMessage) -> FollowUps:
    """Verify, journal and route a result. Rejections are logged with the reason, never raised."""
    log = {"run_id": msg.run_id, "step": msg.step}
    if not verify_result_token(ctx.settings.result_key, Slot.of(msg), msg.token):
        logger.warning("result rejected: wrong result token", extra=log)
        return FollowUps()
    journal = ctx.journal
    deployed = journal.get(msg.run_id, msg.step, EventType.DEPLOYING)
    if deployed is None:
        logger.warning("result rejected: step was never deployed", extra=log)
        return FollowUps()
    digest = hashlib.sha256(msg.to_json().encode()).hexdigest()
    accepted = journal.get(msg.run_id, msg.step, EventType.RESULT)
    if accepted is not None:
        if accepted.details.get("digest") == digest and journal.get(msg.run_id, msg.step, EventType.REMOVED) is None:
            logger.info("result redelivered; re-sending its follow-ups", extra=log)
            return _follow_ups(ctx, deployed, accepted)
        logger.warning("result rejected: a result for this step was already accepted (replay)", extra=log)
        return FollowUps()
    terminal = journal.terminal(msg.run_id)
    if terminal is not None:
        logger.warning("late result ignored: run is already %s", terminal.details.get("state"), extra=log)
        return FollowUps(removals=[RemovalMessage(msg.run_id, msg.step, "late_result")])
    given = _secrets_given(ctx, deployed, msg.step)
    refused: list[str] | None = None
    try:
        merged, ignored = ctx.variables.merge_job_output(deployed.details["variables"], msg.variables, given)
        reason = ""
    except VariableError as exc:
        merged, ignored, reason = deployed.details["variables"], [], exc.message
        if isinstance(exc, SecretInOutput):
            refused = exc.names
            logger.warning("result refused: output variable(s) %s contain a secret the step was given",
                           ", ".join(exc.names), extra=log)
    if ignored:
        logger.warning("job output ignored for reserved, secret or invalid names: %s", ", ".join(ignored),
                       extra=log)
    tail = bounded_tail(redact(msg.log_tail, ctx.settings.secret_values))
    exit_code = msg.exit_code if not reason else (msg.exit_code or 1)
    journal.record(
        msg.run_id, msg.step, EventType.RESULT, exit_code=exit_code, variables=merged, ignored=ignored,
        refused=refused, digest=digest, finished_at=msg.finished_at, log_tail=tail, reason=reason,
        log_uploaded=msg.log_uploaded,
    )
    accepted = journal.get(msg.run_id, msg.step, EventType.RESULT)
    assert accepted is not None
    logger.info("result accepted: exit code %d", exit_code, extra=log)
    return _follow_ups(ctx, deployed, accepted)


def _secrets_given(ctx: Context, deployed: Event, step: int) -> list[str]:
    """The values of the secrets the step's container was given (its plan's names, as deployed).

    A job's output is held against these and no others: a refusal then tells the job nothing about
    a secret it was not given.
    """
    plan = StepPlan.from_dict(deployed.details["steps"][step - 1])
    known = ctx.settings.secret_variables
    return [known[name] for name in plan.secrets if name in known]


def _follow_ups(ctx: Context, deployed: Event, accepted: Event) -> FollowUps:
    """What follows an accepted result: the next step, or the run's end; always the removal."""
    run_id, step = deployed.run_id, deployed.step
    steps = tuple(StepPlan.from_dict(s) for s in deployed.details["steps"])
    exit_code = int(accepted.details["exit_code"])
    variables: dict[str, str] = accepted.details["variables"]
    follow = FollowUps(removals=[RemovalMessage(run_id, step, "finished")])
    if exit_code == 0 and step < len(steps):
        d = deployed.details
        nxt = step + 1
        follow.next_steps.append(StepMessage(
            run_id=run_id, step=nxt, attempt=1, created_at=d["created_at"], deadline=d["deadline"],
            trigger=d["trigger"], steps=steps,
            variables={**variables, **reserved_variables(
                ctx, Slot(run_id, nxt), steps[nxt - 1], d["created_at"], d["deadline"], d["trigger"])},
        ))
    else:
        reason = accepted.details.get("reason") or ("" if exit_code == 0 else f"step {step} exited {exit_code}")
        ctx.journal.finish(run_id, RunState.SUCCEEDED if exit_code == 0 else RunState.FAILED, reason, step=step,
                           exit_code=exit_code)
    return follow
