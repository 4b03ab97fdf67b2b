"""The run journal: one Table storage row per run event, the run's state derived from them, and
the index that lists runs without scanning (loadme.run_index).

PartitionKey is the run id; RowKey is `<step:03d>-<event>`, deterministic, and rows are only
ever inserted, never updated: a redelivered message that records the same event again finds the
row there and adds nothing. A run ends through `Journal.finish` only: its single terminal row
(`000-terminal`) is insert-only too, so the first of racing outcomes (result, cancel, timeout,
poison) wins and the others learn they lost.

Every recorded event is also one structured telemetry record (loadme.telemetry).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from loadme import telemetry
from loadme.run_index import RunIndex
from loadme.slot import Slot

if TYPE_CHECKING:
    from azure.data.tables import TableClient

logger = logging.getLogger(__name__)


class RunState(StrEnum):
    """Where a run is. The last four are terminal: a run reaches exactly one of them, once."""

    QUEUED = "queued"
    DEPLOYING = "deploying"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.TIMED_OUT, RunState.CANCELLED})


class EventType(StrEnum):
    """The events of a run, in the order they normally happen for a step."""

    REQUESTED = "requested"
    WAITING = "waiting"  # a step waits for capacity (admission control)
    DEPLOYING = "deploying"
    STARTED = "started"
    RESULT = "result"
    TERMINAL = "terminal"
    LOGS_ARCHIVED = "logs_archived"
    REMOVED = "removed"
    # Notes: written over (the latest counts), never part of the state machine.
    ATTEMPT_FAILED = "attempt_failed"  # a delivery of one of the step's messages failed (per queue)
    REQUEUED = "requeued"  # an operator put a poisoned message back
    DROPPED = "dropped"  # an operator deleted a poisoned message
    REOPENED = "reopened"  # a requeue undid the end the poisoning had caused


_JSON_FIELDS = ("variables", "steps", "ignored", "refused", "secrets")
_TIMELINE_HIDDEN = ("variables", "steps", "digest", "fingerprint")
_ORDER: dict[str, int] = {e.value: i for i, e in enumerate(EventType)}
_RUN_STEP = 0  # events of the run as a whole (requested, terminal) are recorded on step 0


def row_key(run_id: str, step: int, event: EventType, qualifier: str = "") -> str:
    """The deterministic RowKey of an event (`qualifier` tells apart notes of one kind, e.g. per queue):
    the step's slot's (Slot.row_key), or `000-<event>` for the run's own. Raises ValueError for a
    step out of range."""
    if step == _RUN_STEP:
        return f"{_RUN_STEP:03d}-{event.value}" + (f"-{qualifier}" if qualifier else "")
    return Slot(run_id, step).row_key(event.value, qualifier)


@dataclass(frozen=True)
class Event:
    """One journal row."""

    run_id: str
    step: int
    event: str
    at: str
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The event for the timeline: bulky state (variables, step plan) is left to the run."""
        details = {k: v for k, v in self.details.items() if k not in _TIMELINE_HIDDEN}
        return {"at": self.at, "step": self.step, "event": self.event, **details}


class Journal:
    """Reads and writes run events in one table; the only code that queries it."""

    def __init__(self, table: TableClient, clock: Callable[[], datetime]) -> None:
        self._table = table
        self._clock = clock
        self.index = RunIndex(table, clock)

    # ---- events --------------------------------------------------------------------------------
    def record(self, run_id: str, step: int, event: EventType, **details: Any) -> bool:
        """Insert an event; False (and nothing written) if that event was already recorded."""
        from azure.core.exceptions import ResourceExistsError

        entity: dict[str, Any] = {
            "PartitionKey": run_id, "RowKey": row_key(run_id, step, event),
            "event": event.value, "step": step, "at": self._clock().isoformat(),
        }
        for key, value in details.items():
            if value is None:
                continue  # Table storage has no null; an absent property reads as missing
            entity[key] = json.dumps(value, sort_keys=True) if key in _JSON_FIELDS else value
        try:
            self._table.create_entity(entity)
        except ResourceExistsError:
            logger.info("journal: %s already recorded for step %d", event.value, step,
                        extra={"run_id": run_id, "step": step})
            return False
        telemetry.emit(
            telemetry.RUN_EVENT, "run %s step %d: %s", run_id, step, event.value,
            run_id=run_id, step=step, event=event.value, state=details.get("state"),
            duration_seconds=details.get("duration_seconds"), exit_code=details.get("exit_code"),
            reason=details.get("reason"), trigger=details.get("trigger"),
            container_group=details.get("container_group"),
        )
        return True

    def note(self, run_id: str, step: int, event: EventType, qualifier: str = "", **details: Any) -> None:
        """Write a note (not a state change): the latest one of its kind replaces the earlier."""
        from azure.data.tables import UpdateMode

        entity: dict[str, Any] = {"PartitionKey": run_id, "RowKey": row_key(run_id, step, event, qualifier),
                                  "event": event.value, "step": step, "at": self._clock().isoformat()}
        entity.update({k: v for k, v in details.items() if v is not None})
        self._table.upsert_entity(entity, mode=UpdateMode.REPLACE)

    def retract_start(self, run_id: str, step: int) -> None:
        """Forget that the step was deployed and started: its deployment failed before any container
        ran (a quota, loadme.deploy.redeploy_later), so the step is deployed again from the line."""
        from azure.core.exceptions import ResourceNotFoundError

        for event in (EventType.STARTED, EventType.DEPLOYING):
            try:
                self._table.delete_entity(run_id, row_key(run_id, step, event))
            except ResourceNotFoundError:
                continue

    def note_failure(self, run_id: str, step: int, queue: str, error: str, delivery: int | None) -> None:
        """Record why a delivery of one of the step's messages failed (what the poison list shows)."""
        self.note(run_id, step, EventType.ATTEMPT_FAILED, queue, queue=queue, error=error, delivery=delivery)

    def failure(self, run_id: str, step: int, queue: str) -> Event | None:
        """The last failed delivery recorded for the step's message on `queue`."""
        return self.get(run_id, step, EventType.ATTEMPT_FAILED, queue)

    def get(self, run_id: str, step: int, event: EventType, qualifier: str = "") -> Event | None:
        """One event, or None."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            entity = self._table.get_entity(run_id, row_key(run_id, step, event, qualifier))
        except ResourceNotFoundError:
            return None
        return _event(entity)

    def events(self, run_id: str) -> list[Event]:
        """All of a run's events in the order they happened."""
        rows = self._table.query_entities("PartitionKey eq @run", parameters={"run": run_id})
        found = [_event(row) for row in rows]
        return sorted(found, key=lambda e: (e.at, e.step, _ORDER.get(e.event, 99)))

    # ---- the run as a whole --------------------------------------------------------------------
    def requested(self, run_id: str) -> Event | None:
        """The run's `requested` event (None for an unknown run)."""
        return self.get(run_id, _RUN_STEP, EventType.REQUESTED)

    def terminal(self, run_id: str) -> Event | None:
        """The run's terminal event, once it ended."""
        return self.get(run_id, _RUN_STEP, EventType.TERMINAL)

    def start(self, run_id: str, created_at: str, trigger: str, steps: list[dict[str, Any]], **details: Any) -> bool:
        """Record a new run and put it in the index; False when the run was already recorded."""
        recorded = self.record(run_id, _RUN_STEP, EventType.REQUESTED, created_at=created_at, trigger=trigger,
                               steps=steps, **details)
        # Also after a lost race or a crash between the two writes: the index row is an upsert.
        self.index.add(run_id, created_at, trigger, len(steps), steps[0]["image"] if steps else "")
        return recorded

    def reindex(self, requested: Event, reopened: bool = False) -> None:
        """Make sure a recorded run is in the index (a crash may have come between the two writes);
        `reopened` puts a run that had ended back as running."""
        steps = requested.details.get("steps") or []
        arguments = (requested.run_id, str(requested.details.get("created_at") or requested.at),
                     str(requested.details.get("trigger", "")), len(steps), steps[0]["image"] if steps else "")
        if reopened:
            self.index.reopen(*arguments)
        else:
            self.index.add(*arguments)

    def finish(self, run_id: str, state: RunState, reason: str = "", step: int = _RUN_STEP,
               exit_code: int | None = None) -> bool:
        """End the run in `state`. True when this call ended it; False when it had already ended
        (the first outcome wins: a late result, cancel, timeout or poison changes nothing)."""
        if not state.terminal:
            raise ValueError(f"{state} is not a terminal state")
        requested = self.requested(run_id)
        created_at = str(requested.details.get("created_at") or requested.at) if requested else ""
        now = self._clock()
        duration = (now - datetime.fromisoformat(created_at)).total_seconds() if created_at else None
        won = self.record(run_id, _RUN_STEP, EventType.TERMINAL, state=state.value, reason=reason,
                          step_ended=step or None, exit_code=exit_code, duration_seconds=duration)
        if won and created_at:
            self.index.finish(run_id, created_at, state.value, now.isoformat(), duration, exit_code, reason)
        return won

    def reopen(self, run_id: str, reason: str) -> bool:
        """Undo a run's end when it ended for exactly `reason` (a poisoning an operator now retries).

        Returns whether it was reopened; the terminal row is deleted only if unchanged (ETag).
        """
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        try:
            entity = self._table.get_entity(run_id, row_key(run_id, _RUN_STEP, EventType.TERMINAL))
        except ResourceNotFoundError:
            return False
        if entity.get("reason") != reason:
            return False
        try:
            self._table.delete_entity(run_id, entity["RowKey"], etag=entity.metadata["etag"],
                                      match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        self.note(run_id, _RUN_STEP, EventType.REOPENED, reason=f"ended by: {reason}")
        requested = self.requested(run_id)
        if requested is not None:
            self.reindex(requested, reopened=True)
        telemetry.emit(telemetry.RUN_EVENT, "run %s reopened", run_id, run_id=run_id, step=_RUN_STEP,
                       event=EventType.REOPENED.value, reason=reason)
        return True

    def forget(self, run_id: str) -> None:
        """Delete every row of a run (retention); its index row is the index's to delete."""
        rows = [{"PartitionKey": e["PartitionKey"], "RowKey": e["RowKey"]} for e in self._table.query_entities(
            "PartitionKey eq @run", parameters={"run": run_id}, select=["PartitionKey", "RowKey"])]
        for start in range(0, len(rows), 100):  # one entity group transaction holds at most 100
            self._table.submit_transaction([("delete", row) for row in rows[start:start + 100]])

    def set_state(self, run_id: str, state: RunState) -> None:
        """Show a run's progress (deploying, running) in the index; never undoes an end."""
        requested = self.requested(run_id)
        if requested is not None:
            self.index.progress(run_id, str(requested.details.get("created_at") or requested.at), state.value)


def _event(entity: Any) -> Event:
    details = {
        k: (json.loads(v) if k in _JSON_FIELDS else v)
        for k, v in entity.items()
        if k not in ("PartitionKey", "RowKey", "event", "step", "at")
    }
    return Event(entity["PartitionKey"], int(entity["step"]), entity["event"], entity["at"], details)


@dataclass(frozen=True)
class RunView:
    """A run as the status API shows it."""

    run_id: str
    state: RunState
    cleaned_up: bool
    variables: dict[str, str]
    steps: int
    current_step: int
    events: list[Event]
    logs: list[str]
    plan: list[dict[str, Any]]
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "state": self.state.value, "reason": self.reason,
            "cleaned_up": self.cleaned_up, "current_step": self.current_step, "steps": self.steps,
            "variables": self.variables, "logs": self.logs, "plan": self.plan,
            # Names only: the values never leave the app's settings but as a container's secure values.
            "secrets": sorted({name for step in self.plan for name in step.get("secrets", [])}),
            "events": [e.as_dict() for e in self.events],
        }


def derive_run(run_id: str, events: list[Event]) -> RunView | None:
    """Derive a run's state from its events; None when there are none (unknown run)."""
    if not events:
        return None
    by_key = {(e.step, e.event): e for e in events}
    requested = by_key.get((_RUN_STEP, EventType.REQUESTED.value))
    terminal = by_key.get((_RUN_STEP, EventType.TERMINAL.value))
    steps_started = {e.step for e in events if e.event == EventType.STARTED}
    steps_removed = {e.step for e in events if e.event == EventType.REMOVED}
    current = max((e.step for e in events), default=0)
    reason = ""
    if terminal is not None:
        state = RunState(str(terminal.details.get("state", RunState.FAILED.value)))
        reason = str(terminal.details.get("reason", ""))
    elif (current, EventType.STARTED.value) in by_key or (current, EventType.RESULT.value) in by_key:
        state = RunState.RUNNING
    else:
        waiting = by_key.get((current, EventType.WAITING.value))
        deploying = by_key.get((current, EventType.DEPLOYING.value))
        if deploying is not None and (waiting is None or waiting.at < deploying.at):
            state = RunState.DEPLOYING
        else:  # not deployed yet, or sent back to wait by ACI after a deployment attempt
            state = RunState.QUEUED
            reason = str(waiting.details.get("reason", "")) if waiting else ""
    variables: dict[str, str] = {}
    for event in events:
        if event.event in (EventType.REQUESTED, EventType.RESULT) and "variables" in event.details:
            variables = event.details["variables"]
    return RunView(
        run_id=run_id,
        state=state,
        cleaned_up=terminal is not None and steps_started <= steps_removed,
        variables=variables,
        steps=len(requested.details.get("steps", [])) if requested else 0,
        plan=list(requested.details.get("steps", [])) if requested else [],
        current_step=current,
        events=events,
        logs=[str(e.details["blob"]) for e in events if e.event == EventType.LOGS_ARCHIVED],
        reason=reason,
    )
