"""`Slot`: one container execution (run, step, item, attempt), and every name derived from it.

Each derived form has its parser beside its builder, and a parser accepts only what the builder
makes (it rebuilds the form from what it read and compares), so a name maps to one slot and back.

The defaults (`item=None`: not an item of a fan-out; `attempt=1`) make exactly the names, keys,
tags and token messages loadme has always made from (run id, step), so groups, rows and tokens
of running deployments keep their meaning. Other items and attempts add suffixes:

| form              | default slot                      | with item 3, attempt 2                  |
|-------------------|-----------------------------------|-----------------------------------------|
| container group   | `loadme-<run>-1`                  | `loadme-<run>-1-i3-a2`                  |
| ARM deployment    | `loadme-<run>-1-deploy`           | `loadme-<run>-1-i3-a2-deploy`           |
| log blob          | `<run>/step-001.log`              | `<run>/step-001-i0003-a02.log`          |
| journal RowKey    | `001-<event>[-<qualifier>]`       | `001-i0003-a02-<event>[-<qualifier>]`   |
| active-step key   | `<run>-001`                       | `<run>-001-i0003-a02`                   |
| admission order   | `<ms:013d>-<run>-001`             | `<ms:013d>-<run>-001-i0003-a02`         |
| ACI tags          | run id, step                      | run id, step, item, attempt             |
| result token      | HMAC of `loadme-result\\n<run>\\n<step>` | ... `\\nitem=3\\nattempt=2` appended |

Standard library only (and `loadme.names`, `loadme.contract`, which the image ships too).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from loadme import contract
from loadme.names import GROUP_NAME_PATTERN, MAX_STEP, is_run_id

# Bounds that keep the longest group name (`loadme-` + 32 + `-999-i9999-a99` = 53 chars) within
# ACI's 63 and its deployment name (+ `-deploy`) within ARM's 64, and the padded forms fixed-width
# so that keys sort by step, item, attempt.
# https://learn.microsoft.com/azure/azure-resource-manager/management/resource-name-rules#microsoftcontainerinstance
# https://learn.microsoft.com/azure/azure-resource-manager/management/resource-name-rules#microsoftresources
MAX_ITEM = 9999  # items are numbered from 0
MAX_ATTEMPT = 99  # attempts are numbered from 1
GROUP_PREFIX = "loadme-"
DEPLOYMENT_SUFFIX = "-deploy"
TAG_RUN_ID = "loadme-run-id"
TAG_STEP = "loadme-step"
TAG_ITEM = "loadme-item"
TAG_ATTEMPT = "loadme-attempt"
SLOT_TAGS = (TAG_RUN_ID, TAG_STEP, TAG_ITEM, TAG_ATTEMPT)
HMAC_CONTEXT = "loadme-result"

_NUMBER = r"(?:0|[1-9][0-9]*)"
_GROUP = re.compile(rf"{re.escape(GROUP_PREFIX)}([0-9a-f]{{32}})-({_NUMBER})(?:-i({_NUMBER}))?(?:-a({_NUMBER}))?")
_PADDED = r"([0-9]{3})(?:-i([0-9]{4}))?(?:-a([0-9]{2}))?"
_BLOB = re.compile(rf"([0-9a-f]{{32}})/step-{_PADDED}\.log")
_ROW = re.compile(rf"{_PADDED}-(.+)", re.DOTALL)
_ACTIVE = re.compile(rf"([0-9a-f]{{32}})-{_PADDED}")
_ORDER = re.compile(rf"([0-9]{{13}})-([0-9a-f]{{32}})-{_PADDED}")
_DIGITS = re.compile(_NUMBER)
_EVENT = re.compile(r"[a-z][a-z_]*")


class HasSlotHeader(Protocol):
    """Anything that names a run's step: a message header, a journal event, an index row."""

    @property
    def run_id(self) -> str: ...

    @property
    def step(self) -> int: ...


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Slot:
    """One container execution: step `step` (1-based) of run `run_id`, item `item` of the step's
    fan-out (0-based; None when the step is not fanned out), attempt `attempt` (1-based).

    Raises ValueError for a step, item or attempt out of range. The run id's shape is checked where
    a name depends on it (`group_name`, `deployment_name`) and by every parser.
    """

    run_id: str
    step: int
    item: int | None = None
    attempt: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.run_id, str) or not self.run_id:
            raise ValueError(f"not a run id: {self.run_id!r}")
        if not _is_int(self.step) or not 1 <= self.step <= MAX_STEP:
            raise ValueError(f"step out of range: {self.step!r}")
        if self.item is not None and (not _is_int(self.item) or not 0 <= self.item <= MAX_ITEM):
            raise ValueError(f"item out of range: {self.item!r}")
        if not _is_int(self.attempt) or not 1 <= self.attempt <= MAX_ATTEMPT:
            raise ValueError(f"attempt out of range: {self.attempt!r}")

    @classmethod
    def of(cls, header: HasSlotHeader) -> Slot:
        """The slot a message header, event or index row names (its first attempt, not an item:
        messages and rows carry only run id and step so far). Raises ValueError as the constructor."""
        return cls(header.run_id, header.step)

    @property
    def is_default(self) -> bool:
        """True for the one slot a step had before items and attempts: its names are unchanged."""
        return self.item is None and self.attempt == 1

    def _suffix(self, item_width: int, attempt_width: int) -> str:
        item = "" if self.item is None else f"-i{self.item:0{item_width}d}"
        attempt = "" if self.attempt == 1 else f"-a{self.attempt:0{attempt_width}d}"
        return item + attempt

    @classmethod
    def _rebuilt(cls, run_id: str, step: str, item: str | None, attempt: str | None) -> Slot | None:
        """The slot from parsed text, or None when the numbers are out of range."""
        try:
            return cls(run_id, int(step), None if item is None else int(item), 1 if attempt is None else int(attempt))
        except ValueError:
            return None

    # ---- the container group and its ARM deployment -----------------------------------------
    @property
    def group_name(self) -> str:
        """The ACI container group name (also the local executor's folder and claim): lowercase,
        2-63 chars of `[a-z0-9-]`, no `--` (names.GROUP_NAME_PATTERN). Raises ValueError for a
        run id that is not one."""
        if not is_run_id(self.run_id):
            raise ValueError(f"not a run id: {self.run_id!r}")
        name = f"{GROUP_PREFIX}{self.run_id}-{self.step}{self._suffix(0, 0)}"
        assert GROUP_NAME_PATTERN.fullmatch(name), name
        return name

    @classmethod
    def from_group_name(cls, name: str) -> Slot | None:
        """The slot a container group name was built from, or None if it is not one of ours."""
        found = _GROUP.fullmatch(name)
        slot = cls._rebuilt(*found.groups()) if found else None
        return slot if slot and slot.group_name == name else None

    @property
    def deployment_name(self) -> str:
        """The ARM deployment name of the group (deterministic, so a redelivery reuses it)."""
        return self.group_name + DEPLOYMENT_SUFFIX

    @classmethod
    def from_deployment_name(cls, name: str) -> Slot | None:
        """The slot a deployment name was built from, or None."""
        return cls.from_group_name(name.removesuffix(DEPLOYMENT_SUFFIX)) if name.endswith(DEPLOYMENT_SUFFIX) else None

    # ---- the log blob ---------------------------------------------------------------------------
    @property
    def blob_name(self) -> str:
        """Where the container's log is archived in the logs container."""
        return f"{self.run_id}/step-{self.step:03d}{self._suffix(4, 2)}.log"

    @classmethod
    def from_blob_name(cls, name: str) -> Slot | None:
        """The slot a log blob name was built from, or None."""
        found = _BLOB.fullmatch(name)
        slot = cls._rebuilt(*found.groups()) if found else None
        return slot if slot and slot.blob_name == name else None

    # ---- table keys ------------------------------------------------------------------------------
    @property
    def row_prefix(self) -> str:
        """How the slot's journal RowKeys start (the run's own rows start `000`, never a slot's)."""
        return f"{self.step:03d}{self._suffix(4, 2)}"

    def row_key(self, event: str, qualifier: str = "") -> str:
        """The journal RowKey of an event of this slot (`qualifier` tells notes of one kind apart).
        Raises ValueError for an event name that is not lowercase letters and `_` (one that could
        read as an item or attempt)."""
        if not _EVENT.fullmatch(event):
            raise ValueError(f"not an event name: {event!r}")
        return f"{self.row_prefix}-{event}" + (f"-{qualifier}" if qualifier else "")

    @classmethod
    def from_row_key(cls, run_id: str, row_key: str) -> tuple[Slot, str] | None:
        """The slot and the rest (`<event>[-<qualifier>]`) of a RowKey in run `run_id`'s partition,
        or None for a key no slot makes (the run's own `000-...` rows among them)."""
        found = _ROW.fullmatch(row_key)
        if not found or not is_run_id(run_id):
            return None
        step, item, attempt, rest = found.groups()
        slot = cls._rebuilt(run_id, step, item, attempt)
        event, _, qualifier = rest.partition("-")
        if slot is None or not _EVENT.fullmatch(event) or slot.row_key(event, qualifier) != row_key:
            return None
        return slot, rest

    @property
    def active_key(self) -> str:
        """The RowKey of the slot's row in the journal's active-step index (loadme.run_index)."""
        return f"{self.run_id}-{self.row_prefix}"

    @classmethod
    def from_active_key(cls, key: str) -> Slot | None:
        """The slot an active-step RowKey was built from, or None."""
        found = _ACTIVE.fullmatch(key)
        slot = cls._rebuilt(*found.groups()) if found else None
        return slot if slot and slot.active_key == key else None

    def order_key(self, created_at: datetime) -> str:
        """The slot's place in the line for capacity (loadme.admission): its run's creation time
        (milliseconds since the epoch), then the run, then step, item and attempt."""
        return f"{int(created_at.timestamp() * 1000):013d}-{self.active_key}"

    @classmethod
    def from_order_key(cls, order: str) -> Slot | None:
        """The slot whose place in the line `order` is, or None for a key no slot makes."""
        found = _ORDER.fullmatch(order)
        if not found:
            return None
        _millis, run_id, *numbers = found.groups()
        slot = cls._rebuilt(run_id, *numbers)
        return slot if slot and order.endswith("-" + slot.active_key) else None

    # ---- tags, token, reserved variables ------------------------------------------------------
    @property
    def tags(self) -> dict[str, str]:
        """The ACI tags that tie a container group to its slot (item and attempt only when not default)."""
        tags = {TAG_RUN_ID: self.run_id, TAG_STEP: str(self.step)}
        if self.item is not None:
            tags[TAG_ITEM] = str(self.item)
        if self.attempt != 1:
            tags[TAG_ATTEMPT] = str(self.attempt)
        return tags

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> Slot | None:
        """The slot a group's tags name (other tags are ignored), or None when they name none."""
        mine = {k: v for k, v in tags.items() if k in SLOT_TAGS}
        run_id, step = mine.get(TAG_RUN_ID), mine.get(TAG_STEP)
        if run_id is None or step is None or not is_run_id(run_id):
            return None
        item, attempt = mine.get(TAG_ITEM), mine.get(TAG_ATTEMPT)
        if not all(n is None or (isinstance(n, str) and _DIGITS.fullmatch(n)) for n in (step, item, attempt)):
            return None
        slot = cls._rebuilt(run_id, step, item, attempt)
        return slot if slot and slot.tags == mine else None

    @property
    def token_message(self) -> bytes:
        """What the slot's result token is an HMAC of (loadme.tokens). Item and attempt are in it
        only when not default, so tokens made before they existed still verify, and a late result
        of attempt 1 never verifies as attempt 2's."""
        text = f"{HMAC_CONTEXT}\n{self.run_id}\n{self.step}"
        if self.item is not None:
            text += f"\nitem={self.item}"
        if self.attempt != 1:
            text += f"\nattempt={self.attempt}"
        return text.encode()

    def reserved(self) -> dict[str, str]:
        """The reserved variables (by suffix, loadme.contract) the slot sets for its container.
        Items and attempts set none of their own yet."""
        return {contract.RUN_ID: self.run_id, contract.STEP: str(self.step),
                contract.CONTAINER_GROUP: self.group_name}

    @classmethod
    def from_reserved(cls, values: Mapping[str, str]) -> Slot | None:
        """The slot whose reserved variables (by suffix) these are, or None."""
        run_id, step, group = (values.get(k) for k in (contract.RUN_ID, contract.STEP, contract.CONTAINER_GROUP))
        slot = cls.from_group_name(group) if isinstance(group, str) else None
        return slot if slot and slot.run_id == run_id and str(slot.step) == step else None
