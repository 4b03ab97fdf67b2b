"""`cancel_run`: record `cancelled` and remove the run's containers. Idempotent.

The run's terminal row is insert-only, so a cancel and a finishing result race safely: whichever
is recorded first is the outcome, and a result arriving after a cancel is ignored by `stage2`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from loadme import journal as j
from loadme.context import Context
from loadme.envelope import RemovalMessage
from loadme.names import container_group_name

logger = logging.getLogger(__name__)


@dataclass
class Cancellation:
    """The outcome of a cancel: the run's state now, and the removals to send."""

    found: bool
    state: str = ""
    removals: list[RemovalMessage] = field(default_factory=list)

    @property
    def conflict(self) -> bool:
        """True when the run had already ended some other way."""
        return self.found and self.state != "cancelled"


def cancel_run(ctx: Context, run_id: str) -> Cancellation:
    """Cancel a run unless it already ended; remove every step container not yet removed."""
    events = ctx.journal.events(run_id)
    if not events:
        return Cancellation(found=False)
    if ctx.journal.record(run_id, 0, j.TERMINAL, state="cancelled", reason="cancelled by request"):
        logger.info("run cancelled", extra={"run_id": run_id})
        events = ctx.journal.events(run_id)
    view = j.derive_run(run_id, events)
    assert view is not None
    removed = {e.step for e in events if e.event == j.REMOVED}
    removals = [
        RemovalMessage(
            run_id=run_id, step=e.step, attempt=1, created_at=str(e.details.get("created_at", e.at)),
            deadline=str(e.details.get("deadline", e.at)), variables={},
            container_group=container_group_name(run_id, e.step), reason="cancelled",
        )
        for e in events
        if e.event == j.DEPLOYING and e.step not in removed
    ]
    return Cancellation(found=True, state=view.state, removals=removals)
