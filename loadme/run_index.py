"""The journal's index: partitions that list runs by time and state without scanning the table.

All in the journal's table, in partitions whose keys can never be a run id (run ids are 32 hex
characters):
- `idx-day-<YYYYMMDD>`: one row per run created that day (UTC), RowKey `<inverted ms>-<run id>`
  so a partition reads newest first; it carries the run's state, trigger, size and, once ended,
  end time, duration, exit code and reason. Listing and stats read a bounded set of days.
- `idx-active`: one row per step between `deploying` and `removed`; the janitor reads this one
  partition instead of the whole journal, so a tick costs the same however many runs are past.
- `idx-meta`: the oldest day that still has runs (where retention resumes).
- `idx-ops`: what operator actions (poison requeue, drop) did, so a repeat returns the same.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from loadme.slot import Slot

if TYPE_CHECKING:
    from azure.data.tables import TableClient

logger = logging.getLogger(__name__)

DAY_PREFIX = "idx-day-"
ACTIVE = "idx-active"
META = "idx-meta"
OPERATIONS = "idx-ops"
_MAX_MS = 10**13 - 1
MAX_DAYS_PER_PAGE = 31  # day partitions one page of `runs` reads at most (one query each)
_TERMINAL = frozenset({"succeeded", "failed", "timed_out", "cancelled"})
_INDEX_FIELDS = ("run_id", "created_at", "state", "trigger", "steps", "image", "ended_at", "duration_seconds",
                 "exit_code", "reason")


class CursorError(ValueError):
    """A paging cursor that this index did not hand out."""


@dataclass(frozen=True)
class IndexedRun:
    """A run as the index lists it."""

    run_id: str
    created_at: str
    state: str
    trigger: str
    steps: int
    image: str
    ended_at: str | None = None
    duration_seconds: float | None = None
    exit_code: int | None = None
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _INDEX_FIELDS}


@dataclass(frozen=True)
class RunsPage:
    """Runs newest first, and the cursor of the next page (None when there is none)."""

    runs: list[IndexedRun]
    cursor: str | None


@dataclass(frozen=True)
class ActiveStep:
    """A step whose container group may exist: deployed (or being deployed) and not yet removed."""

    run_id: str
    step: int
    deadline: str
    container_group: str


def day_partition(day: date) -> str:
    return f"{DAY_PREFIX}{day:%Y%m%d}"


def _created(created_at: str) -> datetime:
    return datetime.fromisoformat(created_at).astimezone(UTC)


def _row_key(created_at: str, run_id: str) -> str:
    ms = int(_created(created_at).timestamp() * 1000)
    return f"{_MAX_MS - ms:013d}-{run_id}"


def _key(created_at: str, run_id: str) -> tuple[str, str]:
    return day_partition(_created(created_at).date()), _row_key(created_at, run_id)


_INDEX_TYPES: dict[str, tuple[type, ...]] = {
    "run_id": (str,), "created_at": (str,), "state": (str,), "trigger": (str,), "steps": (int,), "image": (str,),
    "ended_at": (str, type(None)), "duration_seconds": (float, int, type(None)), "exit_code": (int, type(None)),
    "reason": (str,),
}


def _indexed(entity: Any) -> IndexedRun | None:
    """A day row as `RunIndex.add` writes it, or None (logged) for any other row: one bad row never
    stops a listing, the stats or retention."""
    values = {name: entity[name] for name in _INDEX_FIELDS if name in entity}
    wrong = sorted(name for name, value in values.items()
                   if not isinstance(value, _INDEX_TYPES[name]) or isinstance(value, bool))
    try:
        if wrong:
            raise TypeError(f"wrong type for {', '.join(wrong)}")
        return IndexedRun(**values)
    except TypeError as exc:
        logger.error("index: skipping a row of %s that is not a run (RowKey %r): %s",
                     str(entity.get("PartitionKey", ""))[:40], str(entity.get("RowKey", ""))[:80], exc)
        return None


def encode_cursor(day: date, after: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"day": day.isoformat(), "after": after}).encode()).decode()


def decode_cursor(cursor: str) -> tuple[date, str]:
    """The day and row key a cursor resumes after. Raises CursorError if it is not one of ours."""
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return date.fromisoformat(data["day"]), str(data["after"])
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise CursorError("not a cursor this API handed out") from exc


class RunIndex:
    """The index partitions of one journal table."""

    def __init__(self, table: TableClient, clock: Callable[[], datetime]) -> None:
        self._table = table
        self._clock = clock

    # ---- runs by day -------------------------------------------------------------------------
    def add(self, run_id: str, created_at: str, trigger: str, steps: int, image: str) -> None:
        """Index a new run as queued (nothing changes when it is already indexed)."""
        from azure.core.exceptions import ResourceExistsError

        partition, row = _key(created_at, run_id)
        try:
            self._table.create_entity({
                "PartitionKey": partition, "RowKey": row, "run_id": run_id, "created_at": created_at,
                "state": "queued", "trigger": trigger, "steps": steps, "image": image,
            })
        except ResourceExistsError:
            return
        with contextlib.suppress(ResourceExistsError):  # retention already knows where the oldest runs are
            self._table.create_entity({"PartitionKey": META, "RowKey": "retention",
                                       "oldest_day": f"{_created(created_at).date():%Y%m%d}"})

    def reopen(self, run_id: str, created_at: str, trigger: str, steps: int, image: str) -> None:
        """Put an ended run back as running (its end was undone): the end fields are cleared."""
        from azure.data.tables import UpdateMode

        partition, row = _key(created_at, run_id)
        self._table.upsert_entity({"PartitionKey": partition, "RowKey": row, "run_id": run_id,
                                   "created_at": created_at, "state": "running", "trigger": trigger,
                                   "steps": steps, "image": image}, mode=UpdateMode.REPLACE)

    def progress(self, run_id: str, created_at: str, state: str) -> None:
        """Move an unfinished run's state forward; an ended run keeps its end (checked by ETag)."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        partition, row = _key(created_at, run_id)
        for _ in range(3):
            try:
                entity = self._table.get_entity(partition, row)
            except ResourceNotFoundError:
                return
            if entity.get("state") in _TERMINAL:
                return
            try:
                self._table.update_entity({"PartitionKey": partition, "RowKey": row, "state": state},
                                          mode=UpdateMode.MERGE, etag=entity.metadata["etag"],
                                          match_condition=MatchConditions.IfNotModified)
                return
            except ResourceModifiedError:
                continue  # someone else moved it meanwhile: look again
        logger.warning("index: gave up moving run %s to %s after three conflicts", run_id, state)

    def finish(self, run_id: str, created_at: str, state: str, ended_at: str, duration: float | None,
               exit_code: int | None, reason: str) -> None:
        """Record how a run ended (its terminal row decided that already: this always wins)."""
        from azure.data.tables import UpdateMode

        partition, row = _key(created_at, run_id)
        entity: dict[str, Any] = {"PartitionKey": partition, "RowKey": row, "run_id": run_id,
                                  "created_at": created_at, "state": state, "ended_at": ended_at, "reason": reason}
        if duration is not None:
            entity["duration_seconds"] = duration
        if exit_code is not None:
            entity["exit_code"] = exit_code
        self._table.upsert_entity(entity, mode=UpdateMode.MERGE)

    def runs(self, since: datetime, until: datetime, state: str | None = None, limit: int = 50,
             cursor: str | None = None, max_days: int = MAX_DAYS_PER_PAGE) -> RunsPage:
        """Runs created in [since, until], newest first, optionally in one state; `limit` a page.

        A page reads at most `max_days` day partitions: when it stops there, its cursor resumes at the
        next day even if the page holds fewer than `limit` runs (or none), so any range costs a bounded
        number of queries per request. Raises CursorError for a cursor this index did not hand out.
        """
        last_day, first_day = until.astimezone(UTC).date(), since.astimezone(UTC).date()
        day, after = decode_cursor(cursor) if cursor else (last_day, "")
        if day > last_day:  # a cursor from a wider range: its row key belongs to another day
            day, after = last_day, ""
        low, high = _row_key(until.isoformat(), ""), _row_key(since.isoformat(), "~")
        found: list[IndexedRun] = []
        scanned = 0
        while day >= first_day and len(found) < limit and scanned < max_days:
            clauses = ["PartitionKey eq @p", "RowKey ge @low", "RowKey le @high"]
            parameters: dict[str, Any] = {"p": day_partition(day), "low": max(low, after), "high": high}
            if after:
                clauses[1] = "RowKey gt @low"
            if state:
                clauses.append("state eq @state")
                parameters["state"] = state
            wanted = limit - len(found)
            rows = self._table.query_entities(" and ".join(clauses), parameters=parameters,
                                              results_per_page=min(wanted + 1, 1000))
            scanned += 1
            page = []
            for entity in rows:
                page.append(entity)
                if len(page) > wanted:
                    break
            found.extend(run for e in page[:wanted] if (run := _indexed(e)) is not None)
            if len(page) > wanted:
                return RunsPage(found, encode_cursor(day, page[wanted - 1]["RowKey"]))
            day, after = day - timedelta(days=1), ""
        # Stopped at a day's end (the page full, or its days spent): the next page starts with the day
        # before, if the range has one.
        return RunsPage(found, encode_cursor(day, "") if day >= first_day else None)

    def day(self, day: date, limit: int | None = None) -> list[IndexedRun]:
        """The runs created on `day` (UTC): all of them, or the first `limit` (newest first)."""
        if limit is not None and limit <= 0:
            return []
        rows = self._table.query_entities("PartitionKey eq @p", parameters={"p": day_partition(day)},
                                          results_per_page=min(limit, 1000) if limit else None)
        found: list[IndexedRun] = []
        for entity in rows:
            if (run := _indexed(entity)) is not None:
                found.append(run)
            if len(found) == limit:
                break  # before the iterator fetches a page more
        return found

    def oldest_day(self) -> date | None:
        """The oldest day retention has not finished with (None before the first run)."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            entity = self._table.get_entity(META, "retention")
        except ResourceNotFoundError:
            return None
        return datetime.strptime(str(entity["oldest_day"]), "%Y%m%d").date()

    def set_oldest_day(self, day: date) -> None:
        from azure.data.tables import UpdateMode

        self._table.upsert_entity({"PartitionKey": META, "RowKey": "retention", "oldest_day": f"{day:%Y%m%d}"},
                                  mode=UpdateMode.MERGE)

    def forget(self, run: IndexedRun) -> None:
        """Delete a run's index row (retention)."""
        partition, row = _key(run.created_at, run.run_id)
        self._table.delete_entity(partition, row)

    # ---- operator actions (idempotency) ---------------------------------------------------------
    def record_operation(self, key: str, outcome: dict[str, Any]) -> None:
        """Remember what an operator action did, so a repeat returns the same outcome."""
        from azure.data.tables import UpdateMode

        self._table.upsert_entity({"PartitionKey": OPERATIONS, "RowKey": key, "outcome": json.dumps(outcome),
                                   "at": self._clock().isoformat()}, mode=UpdateMode.REPLACE)

    def operation(self, key: str) -> dict[str, Any] | None:
        """The outcome of an earlier operator action, or None."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            entity = self._table.get_entity(OPERATIONS, key)
        except ResourceNotFoundError:
            return None
        return dict(json.loads(entity["outcome"]))

    # ---- active steps ------------------------------------------------------------------------
    def activate(self, run_id: str, step: int, deadline: str, container_group: str) -> None:
        """A step is about to be deployed: the janitor watches it from now on."""
        from azure.data.tables import UpdateMode

        self._table.upsert_entity({"PartitionKey": ACTIVE, "RowKey": Slot(run_id, step).active_key, "run_id": run_id,
                                   "step": step, "deadline": deadline, "container_group": container_group},
                                  mode=UpdateMode.REPLACE)

    def deactivate(self, run_id: str, step: int, deadline: str | None = None) -> None:
        """The step's group is removed: nothing left to watch. With `deadline`, only while the row
        still has it: a newer activation of the step (a later deadline) stays."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        key = Slot(run_id, step).active_key
        try:
            if deadline is None:
                self._table.delete_entity(ACTIVE, key)
                return
            row = self._table.get_entity(ACTIVE, key)
            if row.get("deadline") == deadline:
                self._table.delete_entity(ACTIVE, key, etag=row.metadata["etag"],
                                          match_condition=MatchConditions.IfNotModified)
        except (ResourceNotFoundError, ResourceModifiedError):
            return

    def active(self) -> list[ActiveStep]:
        """Every step that may have a container group. A row `activate` did not write is logged and
        left out: the janitor reads this partition every tick, and one bad row must not stop it."""
        rows = self._table.query_entities("PartitionKey eq @p", parameters={"p": ACTIVE})
        return [step for step in map(_active_step, rows) if step is not None]


def _active_step(entity: Any) -> ActiveStep | None:
    """An `idx-active` row as `RunIndex.activate` writes it, or None (logged) for any other row."""
    from loadme.envelope import parse_time
    from loadme.errors import EnvelopeError

    try:
        run_id, step, deadline, group = (entity["run_id"], entity["step"], entity["deadline"],
                                         entity["container_group"])
        if not (isinstance(run_id, str) and type(step) is int and isinstance(deadline, str) and isinstance(group, str)):
            raise TypeError("a field has the wrong type")
        parse_time(deadline)  # the janitor compares it with the time every tick
    except (KeyError, TypeError, ValueError, EnvelopeError) as exc:
        logger.error("index: skipping a row of %s that is not an active step (RowKey %r): %s",
                     ACTIVE, str(entity.get("RowKey", ""))[:80], exc)
        return None
    return ActiveStep(run_id, step, deadline, group)
