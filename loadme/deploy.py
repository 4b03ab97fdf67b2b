"""`dq_init_job`: deploy one step of a run as a container group, idempotently."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta

from loadme import contract
from loadme.container_env import RunnerControls, container_environment
from loadme.context import Context
from loadme.envelope import RemovalMessage, StepMessage, StepPlan, parse_time
from loadme.errors import DeployRejected, QuotaExceeded, UntrustedMessage
from loadme.executors import ContainerSpec
from loadme.executors.arm_errors import scrub
from loadme.journal import Event, EventType, RunState
from loadme.names import INITJOB_QUEUE, STAGE2_QUEUE
from loadme.run_index import ActiveStep
from loadme.secret_binding import SecretVariables
from loadme.slot import Slot
from loadme.tokens import result_token
from loadme.trust import check_step_message

logger = logging.getLogger(__name__)

# ACI refused a create that admission control allowed: its view of the quota differs from ours for a
# while (other deployments in the subscription, lowered quota): look again in a minute.
QUOTA_REFUSED_WAIT_SECONDS = 60
# The runner's SAS outlives the run's deadline by this much, so a slow post still lands.
SAS_GRACE = timedelta(minutes=15)


def build_container_spec(ctx: Context, msg: StepMessage) -> ContainerSpec:
    """The container group for a step: its variables, secrets and the runner's controls."""
    settings = ctx.settings
    slot = Slot.of(msg)
    blob = slot.blob_name
    start = ctx.clock() - timedelta(minutes=5)  # clock skew between us and the storage service
    expiry = parse_time(msg.deadline) + SAS_GRACE
    # The log is written with a SAS for its one blob in both modes (a user delegation SAS in Azure),
    # so the containers' identity needs no blob role; the result goes with the SAS or the identity.
    log_sas = ctx.storage.log_write_sas(blob, start, expiry)
    sas = ctx.storage.add_only_sas(STAGE2_QUEUE, start, expiry) if settings.result_auth == "sas" else ""
    controls = RunnerControls(
        prefix=settings.variable_prefix,
        result_url=ctx.storage.queue_messages_url(STAGE2_QUEUE),
        result_auth=settings.result_auth,
        token=result_token(settings.result_key, slot),
        log_url=ctx.storage.log_blob_url(blob),
        sas=sas,
        log_sas=log_sas,
        identity_client_id=settings.aci.identity_client_id if settings.aci else "",
    )
    plan = msg.plan
    return ContainerSpec(
        slot=slot,
        deadline=msg.deadline,
        image=plan.image,
        command=plan.command,
        environment=tuple(container_environment(msg.variables, _secrets_of(plan, settings.secret_variables),
                                                controls)),
    )


def _secrets_of(plan: StepPlan, known: SecretVariables) -> dict[str, str]:
    """The secret values the step named, and no others. Raises DeployRejected for a name the app no
    longer knows (SECRET_VARIABLES changed after the run was requested), or one SECRET_VARIABLES no
    longer binds to the step's image: the request was checked, the settings may have changed since."""
    missing = [name for name in plan.secrets if name not in known]
    if missing:
        raise DeployRejected(f"the step asks for secret(s) {', '.join(missing)}, which SECRET_VARIABLES no longer has")
    for name in plan.secrets:
        if refusal := known.refusal(name, plan.image):
            raise DeployRejected(refusal)
    return {name: known[name] for name in plan.secrets}


def wait_for_capacity(ctx: Context, msg: StepMessage, reason: str, delay: float, ahead: int = 0) -> None:
    """The step waits for capacity: its run shows `queued` with the reason, and its message comes back
    after `delay` as a new message (no dequeue attempt is spent toward poison).

    Time spent waiting for capacity does not count toward the run's deadline, which moves on by the
    wait: `timeout_seconds` bounds the run's work, so a burst larger than an hour of ACI creates waits
    its turn instead of timing out in the line.
    """
    seconds = max(1, round(delay))
    waited = _deferred(ctx, msg, seconds)
    ctx.journal.note(msg.run_id, msg.step, EventType.WAITING, reason=reason, ahead=ahead, deadline=waited.deadline)
    ctx.storage.queue(INITJOB_QUEUE).send_message(waited.to_json(), visibility_timeout=seconds)
    logger.info("%s; looking again in %d s", reason, seconds, extra={"run_id": msg.run_id, "step": msg.step})


def redeploy_later(ctx: Context, active: ActiveStep, reason: str) -> bool:
    """A deployment ARM accepted failed for want of quota before any container ran: the step goes
    back in line and is deployed again from its message, rebuilt from the journal. Returns False
    when nothing shows the step was deployed (it was sent back already).

    The message is sent first and the step's start forgotten after, so a janitor that dies half-way
    does it all again on its next tick and the step is never lost; a copy sent twice is deployed
    once (deploy_step's checks).
    """
    journal = ctx.journal
    deploying = journal.get(active.run_id, active.step, EventType.DEPLOYING)
    if deploying is not None:
        msg = step_message(deploying)
        wait_for_capacity(ctx, msg, f"waiting for capacity: the deployment failed ({reason})",
                          QUOTA_REFUSED_WAIT_SECONDS)
        journal.retract_start(active.run_id, active.step)
        ctx.admission.give_back(active.container_group, admission_order(msg))
    journal.index.deactivate(active.run_id, active.step, deadline=active.deadline)
    return deploying is not None


def step_message(deploying: Event) -> StepMessage:
    """The message that deployed a step, from its `deploying` event."""
    d = deploying.details
    return StepMessage(run_id=deploying.run_id, step=deploying.step, attempt=1, created_at=d["created_at"],
                       deadline=d["deadline"], trigger=d["trigger"], variables=d["variables"],
                       steps=tuple(StepPlan.from_dict(s) for s in d["steps"]))


def _deferred(ctx: Context, msg: StepMessage, seconds: int) -> StepMessage:
    """The step's message with its deadline (and the variable that tells the container) `seconds` later."""
    deadline = (parse_time(msg.deadline) + timedelta(seconds=seconds)).isoformat()
    variables = {**msg.variables, ctx.variables.name(contract.DEADLINE): deadline}
    return replace(msg, deadline=deadline, variables=variables)


def _started_before(ctx: Context, msg: StepMessage) -> str:
    """What shows the step's container was started once already ("" if nothing does): a step is
    started at most once, even when a late redelivery finds its group already removed."""
    for event, said in ((EventType.REMOVED, "finished and removed"), (EventType.RESULT, "finished"),
                        (EventType.STARTED, "started")):
        if ctx.journal.get(msg.run_id, msg.step, event) is not None:
            return said
    return ""


def _journal_backs(ctx: Context, msg: StepMessage) -> None:
    """Deploy only what the journal holds (loadme.trust): anyone with queue rights can add to `initjob`.
    Raises UntrustedMessage, which is logged here: the run it names may be another's, so it is not touched."""
    try:
        check_step_message(ctx, msg)
    except UntrustedMessage as exc:
        logger.error("initjob message refused, nothing deployed: %s", exc,
                     extra={"run_id": msg.run_id, "step": msg.step})
        raise


def _image_still_allowed(ctx: Context, plan: StepPlan) -> None:
    """The API checked the image when the run was requested; ALLOWED_IMAGES may have changed since.
    Raises DeployRejected (the run fails with the reason)."""
    policy = ctx.settings.allowed_images
    if not policy.allows(plan.image):
        raise DeployRejected(f"image {plan.image!r} is no longer allowed: ALLOWED_IMAGES allows {policy.describe()}")


def admission_order(msg: StepMessage) -> str:
    """Where the step stands in the line for capacity: its run's submission time, run, step."""
    return Slot.of(msg).order_key(parse_time(msg.created_at))


def deploy_step(ctx: Context, msg: StepMessage) -> list[RemovalMessage]:
    """Deploy the step's container group unless the run is over or the step is done.

    A step that finds no capacity waits (loadme.admission): its message comes back later and no
    dequeue attempt is spent. Returns removal messages when a failed deployment may have left
    something behind. Raises TransientError so the host retries the message, UntrustedMessage
    (nothing deployed, no run touched: it ends in poison) for a message the journal does not back.
    """
    log = {"run_id": msg.run_id, "step": msg.step}
    _journal_backs(ctx, msg)
    journal = ctx.journal
    order = admission_order(msg)
    terminal = journal.terminal(msg.run_id)
    if terminal is not None:
        ctx.admission.forget(order)
        logger.info("run is already %s; not deploying", terminal.details.get("state"), extra=log)
        return []
    started_before = _started_before(ctx, msg)
    if started_before:
        ctx.admission.forget(order)
        logger.info("step already %s; not deploying again", started_before, extra=log)
        return []
    if ctx.clock() >= parse_time(msg.deadline):
        waited = journal.get(msg.run_id, msg.step, EventType.WAITING)
        journal.finish(msg.run_id, RunState.TIMED_OUT, "deadline passed before the container was deployed" + (
            f" ({waited.details.get('reason', 'waiting for capacity')})" if waited else ""), step=msg.step)
        ctx.admission.forget(order)
        logger.warning("deadline passed before deployment", extra=log)
        return []
    try:
        _image_still_allowed(ctx, msg.plan)
        spec = build_container_spec(ctx, msg)
    except DeployRejected as exc:
        journal.finish(msg.run_id, RunState.FAILED, f"cannot deploy step {msg.step}: {exc}", step=msg.step)
        ctx.admission.forget(order)
        logger.error("cannot deploy: %s", exc, extra=log)
        return []
    decision = ctx.admission.admit(spec.name, order, ctx.settings.container_cpu)
    if not decision.admitted:
        wait_for_capacity(ctx, msg, decision.reason, decision.retry_after, decision.ahead)
        return []
    journal.index.activate(msg.run_id, msg.step, msg.deadline, spec.name)
    if journal.record(
        msg.run_id, msg.step, EventType.DEPLOYING, container_group=spec.name, variables=msg.variables,
        steps=[s.as_dict() for s in msg.steps],
        created_at=msg.created_at, deadline=msg.deadline, trigger=msg.trigger,
    ):
        journal.set_state(msg.run_id, RunState.DEPLOYING)
    elif started_before := _started_before(ctx, msg):
        # A redelivery that raced the step's first delivery: its container already ran (maybe it was even
        # removed, which would let a create make a second one); the first delivery owns the step.
        ctx.admission.release(spec.name)
        logger.info("step already %s; not deploying again", started_before, extra=log)
        return []
    try:
        created = ctx.executor.deploy(spec)
    except QuotaExceeded as exc:  # ACI refused although admission let it through (other users of the quota?)
        ctx.admission.give_back(spec.name, order)
        journal.index.deactivate(msg.run_id, msg.step)
        _wait_for_platform(ctx, msg, "waiting for capacity: ACI refused the create "
                                     f"({scrub(str(exc), ctx.settings.secret_values)})")
        return []
    except DeployRejected as exc:
        reason = scrub(str(exc), ctx.settings.secret_values)
        journal.finish(msg.run_id, RunState.FAILED, f"deployment rejected: {reason}", step=msg.step)
        logger.error("deployment rejected: %s", reason, extra=log)
        return [RemovalMessage(run_id=msg.run_id, step=msg.step, reason="deploy_failed")]
    if journal.record(msg.run_id, msg.step, EventType.STARTED, container_group=spec.name, image=spec.image):
        journal.set_state(msg.run_id, RunState.RUNNING)
    logger.info("container group %s %s", spec.name, "started" if created else "already existed", extra=log)
    return []


def _wait_for_platform(ctx: Context, msg: StepMessage, reason: str) -> None:
    """ACI or ARM refused the create for want of quota or capacity, or throttled it: the step waits
    `QUOTA_REFUSED_WAIT_SECONDS` in line, shown `queued` with the reason, and its message comes back
    as a new one (no dequeue attempt spent), its deadline unchanged.

    Unlike admission's own line (`wait_for_capacity`, whose waits do not count toward the deadline:
    that line is ours, and it moves), nothing bounds how long the platform keeps refusing, so these
    waits count: a step still refused at its run's deadline times out (deploy_step's deadline check)
    instead of waiting for ever.
    """
    ctx.journal.note(msg.run_id, msg.step, EventType.WAITING, reason=reason, ahead=0, deadline=msg.deadline)
    ctx.storage.queue(INITJOB_QUEUE).send_message(msg.to_json(), visibility_timeout=QUOTA_REFUSED_WAIT_SECONDS)
    logger.info("%s; looking again in %d s", reason, QUOTA_REFUSED_WAIT_SECONDS,
                extra={"run_id": msg.run_id, "step": msg.step})
