"""The run journal: one Table storage row per run event, and the run's state derived from them.

PartitionKey is the run id; RowKey is `<step:03d>-<event>`, deterministic, and rows are only
ever inserted, never updated: a redelivered message that records the same event again finds the
row there and adds nothing. The run's single terminal event (`000-terminal`) is insert-only too,
so the first of racing outcomes (result, cancel, timeout) wins and the others are ignored.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from azure.data.tables import TableClient

logger = logging.getLogger(__name__)

REQUESTED = "requested"
DEPLOYING = "deploying"
STARTED = "started"
RESULT = "result"
LOGS_ARCHIVED = "logs_archived"
REMOVED = "removed"
TERMINAL = "terminal"

TERMINAL_STATES = ("succeeded", "failed", "timed_out", "cancelled")
_JSON_FIELDS = ("variables", "steps", "ignored")
_TIMELINE_HIDDEN = ("variables", "steps", "digest", "fingerprint")
_ORDER = {REQUESTED: 0, DEPLOYING: 1, STARTED: 2, RESULT: 3, TERMINAL: 4, LOGS_ARCHIVED: 5, REMOVED: 6}


def row_key(step: int, event: str) -> str:
    """The deterministic RowKey of an event."""
    return f"{step:03d}-{event}"


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
    """Reads and writes run events in one table."""

    def __init__(self, table: TableClient, clock: Callable[[], datetime]) -> None:
        self._table = table
        self._clock = clock

    def record(self, run_id: str, step: int, event: str, **details: Any) -> bool:
        """Insert an event; False (and nothing written) if that event was already recorded."""
        from azure.core.exceptions import ResourceExistsError

        entity: dict[str, Any] = {
            "PartitionKey": run_id, "RowKey": row_key(step, event),
            "event": event, "step": step, "at": self._clock().isoformat(),
        }
        for key, value in details.items():
            entity[key] = json.dumps(value, sort_keys=True) if key in _JSON_FIELDS else value
        try:
            self._table.create_entity(entity)
        except ResourceExistsError:
            logger.info("journal: %s already recorded for step %d", event, step,
                        extra={"run_id": run_id, "step": step})
            return False
        return True

    def get(self, run_id: str, step: int, event: str) -> Event | None:
        """One event, or None."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            entity = self._table.get_entity(run_id, row_key(step, event))
        except ResourceNotFoundError:
            return None
        return _event(entity)

    def events(self, run_id: str) -> list[Event]:
        """All of a run's events in the order they happened."""
        rows = self._table.query_entities("PartitionKey eq @run", parameters={"run": run_id})
        found = [_event(row) for row in rows]
        return sorted(found, key=lambda e: (e.at, e.step, _ORDER.get(e.event, 9)))


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
    state: str
    cleaned_up: bool
    variables: dict[str, str]
    steps: int
    current_step: int
    events: list[Event]
    logs: list[str]
    plan: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "state": self.state, "cleaned_up": self.cleaned_up,
            "current_step": self.current_step, "steps": self.steps,
            "variables": self.variables, "logs": self.logs,
            "plan": self.plan,
            "events": [e.as_dict() for e in self.events],
        }


def derive_run(run_id: str, events: list[Event]) -> RunView | None:
    """Derive a run's state from its events; None when there are none (unknown run)."""
    if not events:
        return None
    by_key = {(e.step, e.event): e for e in events}
    requested = by_key.get((0, REQUESTED))
    terminal = by_key.get((0, TERMINAL))
    steps_started = {e.step for e in events if e.event == STARTED}
    steps_removed = {e.step for e in events if e.event == REMOVED}
    current = max((e.step for e in events), default=0)
    if terminal is not None:
        state = str(terminal.details.get("state", "failed"))
    elif (current, STARTED) in by_key or (current, RESULT) in by_key:
        state = "running"
    elif (current, DEPLOYING) in by_key:
        state = "deploying"
    else:
        state = "queued"
    variables: dict[str, str] = {}
    for event in events:
        if event.event in (REQUESTED, RESULT) and "variables" in event.details:
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
        logs=[str(e.details["blob"]) for e in events if e.event == LOGS_ARCHIVED],
    )
