"""`cancel_run`: record `cancelled` and remove the run's containers. Idempotent.

The run's terminal row is insert-only, so a cancel and a finishing result race safely: whichever
is recorded first is the outcome, and a result arriving after a cancel is ignored by `stage2`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from loadme.context import Context
from loadme.envelope import RemovalMessage
from loadme.journal import EventType, RunState, derive_run

logger = logging.getLogger(__name__)


@dataclass
class Cancellation:
    """The outcome of a cancel: the run's state now, and the removals to send."""

    found: bool
    state: RunState | None = None
    removals: list[RemovalMessage] = field(default_factory=list)

    @property
    def conflict(self) -> bool:
        """True when the run had already ended some other way."""
        return self.found and self.state != RunState.CANCELLED


def cancel_run(ctx: Context, run_id: str) -> Cancellation:
    """Cancel a run unless it already ended; remove every step container not yet removed."""
    events = ctx.journal.events(run_id)
    if not events:
        return Cancellation(found=False)
    if ctx.journal.finish(run_id, RunState.CANCELLED, "cancelled by request"):
        logger.info("run cancelled", extra={"run_id": run_id})
        events = ctx.journal.events(run_id)
    view = derive_run(run_id, events)
    assert view is not None
    removed = {e.step for e in events if e.event == EventType.REMOVED}
    removals = [RemovalMessage(run_id, e.step, "cancelled")
                for e in events if e.event == EventType.DEPLOYING and e.step not in removed]
    return Cancellation(found=True, state=view.state, removals=removals)
