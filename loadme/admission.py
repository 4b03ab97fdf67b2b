"""Admission control: never ask ACI for more than its quota; a burst waits and flows in order.

ACI allows per subscription and region a number of container groups and cores, and throttles
creates per 5 minutes and per hour (CAPACITY_* settings; defaults just under Azure's). Every
instance of the app shares one view of what is in use, kept in Table storage with optimistic
concurrency (ETags), so no new service is needed. One partition, `admission`, holds:
- `capacity`: the steps holding a grant (their cores) and the creates of the last hour. A grant is
  taken with a conditional update; a conflict means another instance changed it first, so the
  decision is made again on the new state.
- `wait-<order>`: the steps waiting, keyed by their run's submission time (then run, step), so
  capacity goes to them in submission order: a step is admitted only when fewer steps wait ahead of
  it than could be admitted now. Taking the grant and leaving the line are one atomic write (an
  entity group transaction), so a step is never both waiting and granted.
A step that must wait is not retried by the host (no dequeue attempt is spent toward poison): its
message is sent again, invisible for a while that grows with the number of steps ahead of it, and
its run shows `queued` with the reason. A grant is released when the step's group is removed; the
janitor releases grants whose step ended without one.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from azure.data.tables import TableClient

logger = logging.getLogger(__name__)
T = TypeVar("T")

PARTITION = "admission"
CAPACITY_ROW = "capacity"
WAIT_PREFIX = "wait-"
MIN_WAIT_SECONDS = 10.0
MAX_WAIT_SECONDS = 600.0
MAX_AHEAD_COUNTED = 1000  # rows read to place a waiting step: a deeper one waits the longest anyway
CONFLICT_RETRIES = 20


@dataclass(frozen=True)
class Limits:
    """What ACI allows per subscription and region (minus a margin)."""

    groups: int
    cores: float
    creates_per_5_minutes: int
    creates_per_hour: int


@dataclass
class Capacity:
    """What is in use: grants (step key -> cores) and the creates of the last hour (ISO timestamps)."""

    grants: dict[str, float] = field(default_factory=dict)
    creates: list[str] = field(default_factory=list)

    def prune(self, now: datetime) -> None:
        """Forget creates older than an hour (they no longer count)."""
        cutoff = (now - timedelta(hours=1)).isoformat()
        self.creates = [c for c in self.creates if c > cutoff]

    def room(self, cores: float, limits: Limits, now: datetime) -> tuple[int, str]:
        """How many steps of `cores` could be admitted now, and if none, why."""
        five_minutes = (now - timedelta(minutes=5)).isoformat()
        in_use = sum(self.grants.values())
        free = {
            f"{len(self.grants)} of {limits.groups} container groups in use": limits.groups - len(self.grants),
            f"{in_use:g} of {limits.cores:g} cores in use": math.floor((limits.cores - in_use + 1e-9) / cores),
            f"{limits.creates_per_5_minutes} creates in the last 5 minutes":
                limits.creates_per_5_minutes - sum(1 for c in self.creates if c > five_minutes),
            f"{limits.creates_per_hour} creates in the last hour": limits.creates_per_hour - len(self.creates),
        }
        reason, slots = min(free.items(), key=lambda item: item[1])
        return max(0, slots), (f"waiting for capacity: {reason}" if slots <= 0 else "")

    def as_entity(self) -> dict[str, Any]:
        return {"grants": json.dumps(self.grants, sort_keys=True), "creates": json.dumps(self.creates)}

    @classmethod
    def from_entity(cls, entity: Any) -> Capacity:
        return cls(json.loads(entity.get("grants") or "{}"), json.loads(entity.get("creates") or "[]"))


@dataclass(frozen=True)
class Decision:
    """Whether a step may deploy now; if not, why and when to look again."""

    admitted: bool
    reason: str = ""
    ahead: int = 0
    retry_after: float = 0.0


class AdmissionStore(Protocol):
    """Shared capacity and the waiting line, changed atomically against other instances."""

    def change(self, update: Callable[[Capacity], tuple[T, bool]], leaving: str = "") -> T:
        """Apply `update` to the current capacity and store it unless another writer came first (then
        read again and re-apply: `update` may run several times). When `update` says so (its second
        value), step `leaving` leaves the line in the same atomic write."""
        ...

    def enter(self, order: str) -> None: ...

    def leave(self, order: str) -> None: ...

    def ahead_of(self, order: str, most: int) -> int: ...

    def waiting(self) -> list[str]: ...


class Admission:
    """Decides, for every instance alike, which step may create a container group now."""

    def __init__(self, store: AdmissionStore, limits: Limits, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.limits = limits
        self.clock = clock

    def admit(self, key: str, order: str, cores: float) -> Decision:
        """Take a grant for step `key` (idempotent: a step that has one keeps it), or say why it waits."""
        if cores > self.limits.cores:
            raise ValueError(f"a step of {cores:g} cores can never fit in {self.limits.cores:g}")
        self.store.enter(order)
        ahead = self.store.ahead_of(order, MAX_AHEAD_COUNTED)
        now = self.clock()

        def update(capacity: Capacity) -> tuple[Decision, bool]:
            capacity.prune(now)
            if key in capacity.grants:
                return Decision(True), True
            slots, reason = capacity.room(cores, self.limits, now)
            if slots > ahead:
                capacity.grants[key] = cores
                capacity.creates.append(now.isoformat())
                return Decision(True), True
            reason = reason or f"waiting for capacity: {ahead} step(s) submitted earlier go first"
            return Decision(False, reason, ahead, self._wait(ahead)), False

        return self.store.change(update, leaving=order)

    def give_back(self, key: str, order: str) -> None:
        """Return a grant that was not used (ACI refused the create anyway): the step waits again."""
        self.store.change(lambda capacity: (capacity.grants.pop(key, None), False))
        self.store.enter(order)

    def release(self, key: str) -> bool:
        """The step's group is gone: its grant frees; False if it held none."""
        return self.store.change(lambda capacity: (capacity.grants.pop(key, None) is not None, False))

    def forget(self, order: str) -> None:
        """A waiting step whose run ended: it no longer waits."""
        self.store.leave(order)

    def waiting(self) -> list[str]:
        """The order keys of the steps waiting now."""
        return self.store.waiting()

    def grants(self) -> dict[str, float]:
        """The steps that hold a grant now."""
        return self.store.change(lambda capacity: (dict(capacity.grants), False))

    def _wait(self, ahead: int) -> float:
        # Steps leave the line at most at the hourly create rate: look again in about half the time the
        # ones ahead need, so the head of the line checks often and the tail rarely.
        per_step = 3600.0 / max(1, self.limits.creates_per_hour)
        return min(MAX_WAIT_SECONDS, MIN_WAIT_SECONDS + ahead * per_step / 2)


class TableAdmission:
    """AdmissionStore in one Table partition: the capacity entity (If-Match on its ETag) and one row per
    waiting step; a grant and the step's leaving the line go in one entity group transaction."""

    def __init__(self, table: TableClient) -> None:
        self._table = table

    def change(self, update: Callable[[Capacity], tuple[T, bool]], leaving: str = "") -> T:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceNotFoundError
        from azure.data.tables import TableTransactionError, UpdateMode

        for _ in range(CONFLICT_RETRIES):
            try:
                entity = self._table.get_entity(PARTITION, CAPACITY_ROW)
            except ResourceNotFoundError:
                entity = None
            capacity = Capacity.from_entity(entity) if entity is not None else Capacity()
            before = capacity.as_entity()
            result, leave = update(capacity)
            operations: list[Any] = []
            if capacity.as_entity() != before:  # a read (grants, a step that waits) writes nothing
                row = {"PartitionKey": PARTITION, "RowKey": CAPACITY_ROW, **capacity.as_entity()}
                operations.append(("create", row) if entity is None else (
                    "update", row, {"mode": UpdateMode.REPLACE, "etag": entity.metadata["etag"],
                                    "match_condition": MatchConditions.IfNotModified}))
            if leave and leaving and self._waiting(leaving):
                operations.append(("delete", {"PartitionKey": PARTITION, "RowKey": WAIT_PREFIX + leaving}))
            if not operations:
                return result  # nothing changed: no write, no contention
            try:
                self._table.submit_transaction(operations)
            except TableTransactionError:
                continue  # another instance wrote first (412/409), or the step left meanwhile: decide again
            return result
        raise RuntimeError(f"admission: {CONFLICT_RETRIES} write conflicts in a row")  # the host retries

    def _waiting(self, order: str) -> bool:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self._table.get_entity(PARTITION, WAIT_PREFIX + order, select=["RowKey"])
        except ResourceNotFoundError:
            return False
        return True

    def enter(self, order: str) -> None:
        from azure.core.exceptions import ResourceExistsError

        try:
            self._table.create_entity({"PartitionKey": PARTITION, "RowKey": WAIT_PREFIX + order})
        except ResourceExistsError:
            return

    def leave(self, order: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self._table.delete_entity(PARTITION, WAIT_PREFIX + order)
        except ResourceNotFoundError:
            return

    def ahead_of(self, order: str, most: int) -> int:
        rows = self._table.query_entities("PartitionKey eq @p and RowKey ge @low and RowKey lt @order",
                                          parameters={"p": PARTITION, "low": WAIT_PREFIX,
                                                      "order": WAIT_PREFIX + order},
                                          select=["RowKey"], results_per_page=min(most, 1000))
        count = 0
        for _ in rows:
            count += 1
            if count >= most:
                break
        return count

    def waiting(self) -> list[str]:
        rows = self._table.query_entities("PartitionKey eq @p and RowKey ge @low and RowKey lt @high",
                                          parameters={"p": PARTITION, "low": WAIT_PREFIX, "high": "wait."},
                                          select=["RowKey"])
        return [str(row["RowKey"])[len(WAIT_PREFIX):] for row in rows]
