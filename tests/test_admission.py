"""Admission control: the limits, submission order, and many instances sharing one view (Azurite)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.data.tables import TableServiceClient

from devhost.azurite import Azurite
from loadme.admission import Admission, Capacity, Limits, TableAdmission
from loadme.slot import Slot
from tests.support import Clock

LIMITS = Limits(groups=3, cores=4.0, creates_per_5_minutes=5, creates_per_hour=8)
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_room_is_the_tightest_limit_and_says_which() -> None:
    capacity = Capacity(grants={"a": 1.0, "b": 1.0})
    assert capacity.room(1.0, LIMITS, NOW) == (1, "")  # one group left
    assert capacity.room(2.5, LIMITS, NOW)[0] == 0  # 2 + 2.5 cores > 4
    assert "cores in use" in capacity.room(2.5, LIMITS, NOW)[1]
    recent = [(NOW - timedelta(minutes=m)).isoformat() for m in (1, 2, 3, 4, 4.5)]
    slots, reason = Capacity(creates=recent).room(1.0, LIMITS, NOW)
    assert (slots, reason) == (0, "waiting for capacity: 5 creates in the last 5 minutes")
    hour = [(NOW - timedelta(minutes=m)).isoformat() for m in (10, 20, 30, 40, 50, 55, 58, 59)]
    assert Capacity(creates=hour).room(1.0, LIMITS, NOW) == (0, "waiting for capacity: 8 creates in the last hour")
    capacity = Capacity(creates=[*hour, (NOW - timedelta(minutes=61)).isoformat()])
    capacity.prune(NOW)
    assert len(capacity.creates) == 8  # the one older than an hour no longer counts


@pytest.fixture
def tables(azurite: Azurite, tmp_path: Path) -> Any:
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    name = "admission" + tmp_path.name.replace("_", "")[-20:].lower().replace("-", "")
    table = service.create_table(name)
    yield table
    service.delete_table(name)


def _admission(table: Any, clock: Clock, limits: Limits = LIMITS) -> Admission:
    return Admission(TableAdmission(table), limits, clock)


def test_steps_are_admitted_in_submission_order_as_capacity_frees(tables: Any) -> None:
    clock = Clock(NOW)
    admission = _admission(tables, clock, Limits(groups=2, cores=10, creates_per_5_minutes=100,
                                                 creates_per_hour=100))
    orders = [Slot(f"{i:032x}", 1).order_key(NOW + timedelta(seconds=i)) for i in range(5)]
    keys = [f"group-{i}" for i in range(5)]
    # The later steps arrive first: they must not overtake the earlier ones that wait.
    for i in (4, 3, 2):
        assert admission.admit(keys[i], orders[i], 1.0).admitted is (i in (4, 3))
    first, second = admission.admit(keys[0], orders[0], 1.0), admission.admit(keys[1], orders[1], 1.0)
    assert not first.admitted and first.reason == "waiting for capacity: 2 of 2 container groups in use"
    assert not second.admitted and second.ahead == 1  # step 0 waits ahead of it
    assert admission.release(keys[4])
    assert not admission.admit(keys[2], orders[2], 1.0).admitted  # two earlier steps wait: not its turn
    assert not admission.admit(keys[1], orders[1], 1.0).admitted  # one earlier step waits, one slot: not yet
    assert admission.admit(keys[0], orders[0], 1.0).admitted  # the head of the line gets the slot
    assert admission.admit(keys[0], orders[0], 1.0).admitted  # and keeps it when asked again (redelivery)
    assert set(admission.grants()) == {keys[0], keys[3]}
    later = admission.admit(keys[2], orders[2], 1.0)
    assert later.retry_after > first.retry_after  # deeper in the line: looks again later


def test_concurrent_instances_never_grant_more_than_the_limit(tables: Any) -> None:
    """Twelve instances at once for three groups, each asking again until it is in or the groups are
    full (as waiting steps do): the ETag lets exactly three in, whatever the interleaving."""
    clock = Clock(NOW)
    barrier = threading.Barrier(12)

    def one(i: int) -> bool:
        admission = _admission(tables, clock)  # each instance has its own clients
        barrier.wait()
        while True:
            if admission.admit(f"g-{i}", Slot(f"{i:032x}", 1).order_key(NOW), 1.0).admitted:
                return True
            if len(admission.grants()) >= LIMITS.groups:
                return False

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(one, range(12)))
    assert results.count(True) == 3
    assert len(_admission(tables, clock).grants()) == 3


def test_a_step_bigger_than_the_whole_capacity_is_an_error(tables: Any) -> None:
    with pytest.raises(ValueError, match="can never fit"):
        _admission(tables, Clock(NOW)).admit("g", Slot("a" * 32, 1).order_key(NOW), 5.0)


def test_reading_the_capacity_writes_nothing(tables: Any) -> None:
    """A janitor tick reads the grants: on a fresh table that must not create the capacity row (a tick
    costs the same number of requests whatever came before)."""
    admission = _admission(tables, Clock(NOW))
    assert admission.grants() == {}
    assert list(tables.list_entities()) == []
    assert admission.admit("g", Slot("a" * 32, 1).order_key(NOW), 1.0).admitted
    assert [row["RowKey"] for row in tables.list_entities()] == ["capacity"]
