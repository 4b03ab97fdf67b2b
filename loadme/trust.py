"""Queue messages are untrusted input: what backs one before the app acts on it or on its run.

Anyone who can add messages to a queue can forge one (every container may add to `stage2`; whoever
holds queue rights on the account may add to `initjob` and `removeinfra`). The envelope already
refuses a header the app cannot have written (loadme.envelope.decode). Beyond that:
- a result (`stage2`) speaks for its run only with its step's token (loadme.tokens);
- a step message (`initjob`) is deployed only as the journal has it: the run was requested, with
  this plan, and its variables are the ones the app journaled (step 1: the request; a later step:
  the previous step's accepted result), with a deadline the app can have given it;
- a removal (`removeinfra`) names a run the journal knows.
A message that is not backed this way changes no run: it neither notes a failed delivery on it, nor
fails it when poisoned, nor reopens it when requeued. docs/architecture.md lists where each check is.
"""

from __future__ import annotations

from datetime import timedelta

from loadme import contract
from loadme.context import Context
from loadme.envelope import Message, ResultMessage, StepMessage, StepPlan, parse_time
from loadme.errors import EnvelopeError, UntrustedMessage
from loadme.journal import EventType
from loadme.runs import reserved_variables
from loadme.slot import Slot
from loadme.tokens import verify_result_token

# Instances' clocks differ a little; a step's deadline may lie this much further out than the
# run's timeout from now (the same allowance build_container_spec gives its SAS start).
CLOCK_SKEW = timedelta(minutes=5)


def result_verifies(ctx: Context, msg: ResultMessage) -> bool:
    """True when the result carries its run and step's token (no I/O)."""
    return verify_result_token(ctx.settings.result_key, Slot.of(msg), msg.token)


def check_step_message(ctx: Context, msg: StepMessage) -> None:
    """Check a step message against the journal. Raises UntrustedMessage saying what differs.

    The plan (image, command, secret names) must be the one the run was requested with; the
    container's resources are not in the message (the app's settings give them). The variables must
    be the journaled ones: the request's for step 1; for a later step, the previous step's accepted
    result and the reserved variables of this step, which only a successful result leads to. The one
    thing a legitimate message changes on its way is the deadline (and the variable that carries
    it): each wait for capacity moves it on by the wait (loadme.deploy.wait_for_capacity), and a wait
    only ends once it has passed, so a step's deadline never lies further from now than the run's
    timeout.
    """
    journal = ctx.journal
    requested = journal.requested(msg.run_id)
    if requested is None:
        raise UntrustedMessage("no run with this id was requested")
    run = requested.details
    try:
        plan = tuple(StepPlan.from_dict(s) for s in run["steps"])
        created_at, trigger = str(run["created_at"]), str(run["trigger"])
        timeout = parse_time(str(run["deadline"])) - parse_time(created_at)
        if msg.step == 1:
            variables, deadline = dict(run["variables"]), str(run["deadline"])
        else:
            variables, deadline = _after_previous_step(ctx, msg, plan)
    except UntrustedMessage:
        raise
    except (KeyError, TypeError, ValueError, EnvelopeError) as exc:  # a journal row this release cannot read
        raise UntrustedMessage(f"the run's journal does not say how to deploy step {msg.step} ({exc!r})") from exc
    if msg.steps != plan:
        raise UntrustedMessage("its step plan differs from the one the run was requested with")
    if (msg.created_at, msg.trigger) != (created_at, trigger):
        raise UntrustedMessage("its creation time or trigger differs from the run's")
    if msg.variables != {**variables, ctx.variables.name(contract.DEADLINE): msg.deadline}:
        raise UntrustedMessage("its variables differ from the ones the journal holds for the step")
    moved_to = parse_time(msg.deadline)
    if moved_to < parse_time(deadline) or moved_to - ctx.clock() > timeout + CLOCK_SKEW:
        raise UntrustedMessage(f"its deadline {msg.deadline} is not one the app gave the step")


def _after_previous_step(ctx: Context, msg: StepMessage, plan: tuple[StepPlan, ...]) -> tuple[dict[str, str], str]:
    """The variables and deadline stage2 gave step `msg.step` when the step before it succeeded
    (loadme.results._follow_ups). Raises UntrustedMessage when no such result was accepted."""
    previous = msg.step - 1
    deployed = ctx.journal.get(msg.run_id, previous, EventType.DEPLOYING)
    accepted = ctx.journal.get(msg.run_id, previous, EventType.RESULT)
    if deployed is None or accepted is None or int(accepted.details["exit_code"]) != 0 or msg.step > len(plan):
        raise UntrustedMessage(f"step {previous} has no accepted successful result")
    d = deployed.details
    reserved = reserved_variables(ctx, Slot.of(msg), plan[msg.step - 1], str(d["created_at"]),
                                  str(d["deadline"]), str(d["trigger"]))
    return {**accepted.details["variables"], **reserved}, str(d["deadline"])


def untrusted_reason(ctx: Context, message: Message) -> str:
    """Why a message may not change its run ("" when it may): a result without its token, a step
    message the journal does not back, a removal for a run the journal does not know."""
    if isinstance(message, ResultMessage):
        return "" if result_verifies(ctx, message) else "its result token does not verify"
    if isinstance(message, StepMessage):
        try:
            check_step_message(ctx, message)
        except UntrustedMessage as exc:
            return str(exc)
        return ""
    return "" if ctx.journal.requested(message.run_id) is not None else "no run with this id was requested"


def may_note_failure(ctx: Context, message: Message, error: BaseException) -> bool:
    """Whether a failed delivery of `message` may be noted on its run, as cheaply as that is known:
    a result by its token (no I/O); a step message that failed its journal check never; any other
    message only for a run the journal knows (one read, on the failure path only)."""
    if isinstance(message, ResultMessage):
        return result_verifies(ctx, message)
    if isinstance(error, UntrustedMessage):
        return False
    return ctx.journal.requested(message.run_id) is not None
