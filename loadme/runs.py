"""Starting a run and reading its status.

`start_run` is the one place where a run's variables are defined: defaults from settings, then
the requester's, then the reserved ones the orchestrator calculates.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from loadme import contract
from loadme.api import StartRequest
from loadme.context import Context
from loadme.envelope import StepMessage, StepPlan
from loadme.errors import RequestError
from loadme.journal import derive_run
from loadme.names import new_run_id
from loadme.slot import Slot

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Started:
    """A run accepted: the message for `initjob` (None when the run already existed)."""

    run_id: str
    message: StepMessage | None


def reserved_variables(
    ctx: Context, slot: Slot, plan: StepPlan, created_at: str, deadline: str, trigger: str
) -> dict[str, str]:
    """The variables only the orchestrator sets, for one slot of a run (its own: Slot.reserved)."""
    name = ctx.variables.name
    return {
        **{name(suffix): value for suffix, value in slot.reserved().items()},
        name(contract.IMAGE): plan.image,
        name(contract.CREATED_AT): created_at,
        name(contract.DEADLINE): deadline,
        name(contract.TRIGGER): trigger,
    }


def request_fingerprint(request: StartRequest) -> str:
    """A digest of what was asked for (not of the bytes), to spot a reused idempotency key."""
    canonical = json.dumps([request.variables, [s.as_dict() for s in request.steps], request.timeout_seconds],
                           sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def start_run(ctx: Context, request: StartRequest, trigger: str, run_id: str | None = None) -> Started:
    """Record a new run and build its first `initjob` message.

    With a `run_id` (from an idempotency key) an existing run is returned as is. Raises
    RequestError (422) when that run was started by a different request, VariableError (413)
    when the run's variables would not fit a message.
    """
    fingerprint = request_fingerprint(request)
    if run_id is not None and (existing := _existing_run(ctx, run_id, fingerprint)) is not None:
        return existing
    run_id = run_id or new_run_id()
    now = ctx.clock()
    created_at = now.isoformat()
    deadline = (now + timedelta(seconds=request.timeout_seconds)).isoformat()
    variables = {
        **ctx.settings.default_variables,
        **request.variables,
        **reserved_variables(ctx, Slot(run_id, 1), request.steps[0], created_at, deadline, trigger),
    }
    ctx.variables.check_size(variables)
    message = StepMessage(
        run_id=run_id, step=1, attempt=1, created_at=created_at, deadline=deadline, trigger=trigger,
        variables=variables, steps=request.steps,
    )
    recorded = ctx.journal.start(
        run_id, created_at, trigger, [s.as_dict() for s in request.steps],
        variables=variables, deadline=deadline, fingerprint=fingerprint,
    )
    if not recorded:  # a concurrent request with the same idempotency key recorded it first
        existing = _existing_run(ctx, run_id, fingerprint)
        assert existing is not None
        return existing
    logger.info("run requested by %s with %d step(s)", trigger, len(request.steps),
                extra={"run_id": run_id, "step": 1})
    return Started(run_id, message)


def _existing_run(ctx: Context, run_id: str, fingerprint: str) -> Started | None:
    """The run an idempotency key already started, or None. Raises RequestError (422) when it was
    started by a different request."""
    existing = ctx.journal.requested(run_id)
    if existing is None:
        return None
    if existing.details.get("fingerprint") != fingerprint:
        raise RequestError(422, "Idempotency-Key was already used for a different request")
    ctx.journal.reindex(existing)
    logger.info("run already exists; not starting it again", extra={"run_id": run_id})
    return Started(run_id, None)


def run_status(ctx: Context, run_id: str) -> dict[str, Any] | None:
    """The status document of a run, or None when the run is unknown."""
    view = derive_run(run_id, ctx.journal.events(run_id))
    return view.as_dict() if view else None

