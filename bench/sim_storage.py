"""In-memory stand-ins for the app's storage, for the scale simulation (one thread, a fake clock).

- `MemoryTable`: the calls the journal and its index make on an `azure.data.tables.TableClient`
  (insert-only creates, gets, upserts, ETag-checked updates and deletes, a partition's rows), with
  the SDK's errors.
- `MemoryAdmission`: `loadme.admission.AdmissionStore` in memory, with the Table store's semantics
  (a step leaves the line in the same write that grants it).
- `SimulatedStorage`: the app's `StorageClients` with those, queues that hand each sent message to
  the simulation (`visibility_timeout` included), and empty poison queues.
"""

from __future__ import annotations

import base64
import bisect
import functools
import itertools
import re
from collections.abc import Callable
from datetime import datetime
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, TypeVar, cast

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableEntity, UpdateMode
from azure.storage.blob import UserDelegationKey

from loadme.admission import Capacity
from loadme.settings import Settings
from loadme.storage import StorageClients

if TYPE_CHECKING:
    from azure.data.tables import TableClient
    from azure.storage.queue import QueueClient

T = TypeVar("T")
Key = tuple[str, str]
PARTITION_FILTER = re.compile(r"PartitionKey eq @(?P<name>\w+)")


class MemoryTable:
    """A table in memory: what `loadme.journal` and `loadme.run_index` call, partition by partition."""

    def __init__(self) -> None:
        self._partitions: dict[str, dict[str, dict[str, Any]]] = {}
        self._etags: dict[Key, str] = {}
        self._versions = itertools.count(1)

    def _row(self, key: Key) -> dict[str, Any] | None:
        return self._partitions.get(key[0], {}).get(key[1])

    def _put(self, key: Key, row: dict[str, Any]) -> None:
        self._partitions.setdefault(key[0], {})[key[1]] = row
        self._etags[key] = f'W/"{next(self._versions)}"'

    def _entity(self, key: Key, row: dict[str, Any]) -> TableEntity:
        found = TableEntity(row)
        found._metadata = {"etag": self._etags[key], "timestamp": None}
        return found

    def _check(self, key: Key, etag: str | None, match_condition: MatchConditions | None) -> None:
        if match_condition == MatchConditions.IfNotModified and self._etags.get(key) != etag:
            raise ResourceModifiedError("The update condition specified in the request was not satisfied.")

    def create_entity(self, entity: dict[str, Any], **_: Any) -> None:
        key = _key(entity)
        if self._row(key) is not None:
            raise ResourceExistsError("The specified entity already exists.")
        self._put(key, dict(entity))

    def get_entity(self, partition_key: str, row_key: str, **_: Any) -> TableEntity:
        key = (partition_key, row_key)
        row = self._row(key)
        if row is None:
            raise ResourceNotFoundError("The specified resource does not exist.")
        return self._entity(key, row)

    def upsert_entity(self, entity: dict[str, Any], mode: UpdateMode = UpdateMode.MERGE, **_: Any) -> None:
        key = _key(entity)
        row = self._row(key)
        self._put(key, {**row, **entity} if mode == UpdateMode.MERGE and row is not None else dict(entity))

    def update_entity(self, entity: dict[str, Any], mode: UpdateMode = UpdateMode.MERGE, etag: str | None = None,
                      match_condition: MatchConditions | None = None, **_: Any) -> None:
        key = _key(entity)
        row = self._row(key)
        if row is None:
            raise ResourceNotFoundError("The specified resource does not exist.")
        self._check(key, etag, match_condition)
        self._put(key, {**row, **entity} if mode == UpdateMode.MERGE else dict(entity))

    def delete_entity(self, partition_key: str, row_key: str, etag: str | None = None,
                      match_condition: MatchConditions | None = None, **_: Any) -> None:
        key = (partition_key, row_key)
        if self._row(key) is None:
            return  # the SDK's delete_entity succeeds on a missing entity
        self._check(key, etag, match_condition)
        del self._partitions[partition_key][row_key]
        del self._etags[key]

    def query_entities(self, query_filter: str, parameters: dict[str, Any] | None = None,
                       **_: Any) -> list[TableEntity]:
        """The rows of one partition, in RowKey order: the only query the simulated functions make
        (`PartitionKey eq @name`: a run's events, the active steps, a day of the index)."""
        match = PARTITION_FILTER.fullmatch(query_filter)
        if match is None or parameters is None:
            raise NotImplementedError(f"the simulation answers only a partition's rows, not {query_filter!r}")
        partition = str(parameters[match["name"]])
        rows = self._partitions.get(partition, {})
        return [self._entity((partition, row_key), rows[row_key]) for row_key in sorted(rows)]


def _key(entity: dict[str, Any]) -> Key:
    return str(entity["PartitionKey"]), str(entity["RowKey"])


class MemoryAdmission:
    """The capacity and the waiting line of `loadme.admission`, in memory (see TableAdmission)."""

    def __init__(self) -> None:
        self.capacity = Capacity()
        self._line: list[str] = []  # order keys, sorted

    def change(self, update: Callable[[Capacity], tuple[T, bool]], leaving: str = "") -> T:
        result, leave = update(self.capacity)
        if leave and leaving:
            self.leave(leaving)
        return result

    def enter(self, order: str) -> None:
        index = bisect.bisect_left(self._line, order)
        if index == len(self._line) or self._line[index] != order:
            self._line.insert(index, order)

    def leave(self, order: str) -> None:
        index = bisect.bisect_left(self._line, order)
        if index < len(self._line) and self._line[index] == order:
            del self._line[index]

    def ahead_of(self, order: str, most: int) -> int:
        return min(most, bisect.bisect_left(self._line, order))

    def waiting(self) -> list[str]:
        return list(self._line)


class SimulatedQueue:
    """A queue client whose `send_message` hands the text to the simulation."""

    def __init__(self, name: str, deliver: Callable[[str, str, float], None]) -> None:
        self.name = name
        self._deliver = deliver

    def send_message(self, content: str, visibility_timeout: int | None = None, **_: Any) -> None:
        self._deliver(self.name, content, float(visibility_timeout or 0))


class EmptyQueue:
    """A poison queue nothing was ever poisoned into (what the janitor and the stats read)."""

    def get_queue_properties(self, **_: Any) -> Any:
        return SimpleNamespace(approximate_message_count=0)

    def peek_messages(self, **_: Any) -> list[Any]:
        return []


class SimulatedStorage(StorageClients):
    """The app's storage clients with the journal table and the queues in the simulation."""

    def __init__(self, settings: Settings, deliver: Callable[[str, str, float], None]) -> None:
        super().__init__(settings)
        self._deliver = deliver
        self.memory_table = MemoryTable()

    @functools.cache  # noqa: B019 - one client per queue for the life of this object, as the base class
    def queue(self, name: str) -> QueueClient:
        return cast("QueueClient", SimulatedQueue(name, self._deliver))

    def raw_queue(self, name: str) -> QueueClient:
        if not name.endswith("-poison"):
            raise NotImplementedError(f"the simulation reads only poison queues raw, not {name}")
        return cast("QueueClient", EmptyQueue())

    @property
    def table(self) -> TableClient:
        return cast("TableClient", self.memory_table)

    def _user_delegation_key(self, start: datetime, expiry: datetime) -> tuple[UserDelegationKey, datetime]:
        """A delegation key as Get User Delegation Key returns one (the SAS is signed with it for real):
        the simulation has no blob service to ask."""
        key = UserDelegationKey()  # type: ignore[no-untyped-call]
        key.signed_oid, key.signed_tid = "00000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-000000000002"
        stamp = "%Y-%m-%dT%H:%M:%SZ"
        key.signed_start, key.signed_expiry = start.strftime(stamp), expiry.strftime(stamp)
        key.signed_service, key.signed_version = "b", "2025-01-05"
        key.value = base64.b64encode(b"simulated delegation key").decode()
        return key, expiry
