"""Slot: every derived form parses back to its slot, only canonical forms parse, distinct slots
never share a name, key or token, and the default slot keeps the names loadme has always made."""

from __future__ import annotations

import hashlib
import hmac
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadme import contract
from loadme.executors.aci_parameters import TAG_DEADLINE
from loadme.names import GROUP_NAME_PATTERN, MAX_STEP, OWNER_TAG, OWNER_TAG_VALUE
from loadme.slot import MAX_ATTEMPT, MAX_ITEM, Slot
from loadme.tokens import result_token, verify_result_token

REPO = Path(__file__).resolve().parent.parent
RUN = "0123456789abcdef0123456789abcdef"
KEY = b"k" * 32
# ARM deployment names: 1-64 characters of alphanumerics, underscores, parentheses, hyphens, periods.
# https://learn.microsoft.com/azure/azure-resource-manager/management/resource-name-rules#microsoftresources
ARM_DEPLOYMENT_NAME = re.compile(r"[-\w._()]{1,64}")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

run_ids = st.from_regex(r"\A[0-9a-f]{32}\Z")
slots = st.builds(Slot, run_ids, st.integers(1, MAX_STEP), st.none() | st.integers(0, MAX_ITEM),
                  st.integers(1, MAX_ATTEMPT))
times = st.integers(0, 10**12).map(lambda ms: EPOCH + timedelta(milliseconds=ms))
events = st.from_regex(r"\A[a-z][a-z_]{0,15}\Z")
qualifiers = st.just("") | st.from_regex(r"\A[a-z0-9]{1,12}\Z")


@given(slots, times, events, qualifiers)
def test_every_form_parses_back_to_its_slot(slot: Slot, created_at: datetime, event: str, qualifier: str) -> None:
    assert Slot.from_group_name(slot.group_name) == slot
    assert Slot.from_deployment_name(slot.deployment_name) == slot
    assert Slot.from_blob_name(slot.blob_name) == slot
    rest = event + (f"-{qualifier}" if qualifier else "")
    assert Slot.from_row_key(slot.run_id, slot.row_key(event, qualifier)) == (slot, rest)
    assert Slot.from_active_key(slot.active_key) == slot
    assert Slot.from_order_key(slot.order_key(created_at)) == slot
    assert Slot.from_tags({OWNER_TAG: OWNER_TAG_VALUE, **slot.tags, TAG_DEADLINE: "x"}) == slot
    assert Slot.from_reserved(slot.reserved()) == slot


@given(slots)
def test_names_stay_within_azures_rules(slot: Slot) -> None:
    assert GROUP_NAME_PATTERN.fullmatch(slot.group_name) and len(slot.group_name) <= 63
    assert ARM_DEPLOYMENT_NAME.fullmatch(slot.deployment_name)


@given(slots, slots, times)
def test_distinct_slots_share_no_name_key_or_token(a: Slot, b: Slot, created_at: datetime) -> None:
    forms = [lambda s: s.group_name, lambda s: s.blob_name, lambda s: (s.run_id, s.row_key("result")),
             lambda s: s.active_key, lambda s: s.order_key(created_at), lambda s: s.tags, lambda s: s.token_message,
             lambda s: result_token(KEY, s)]
    assert all((form(a) == form(b)) == (a == b) for form in forms)


@given(slots)
def test_a_token_verifies_for_its_own_slot_only(slot: Slot) -> None:
    """A late result of one attempt (or item) never verifies as another's: its token differs."""
    token = result_token(KEY, slot)
    assert verify_result_token(KEY, slot, token)
    others = {Slot(slot.run_id, slot.step, slot.item, slot.attempt % MAX_ATTEMPT + 1),
              Slot(slot.run_id, slot.step, None if slot.item is not None else 0, slot.attempt)}
    assert not any(verify_result_token(KEY, other, token) for other in others)


def test_a_late_first_attempt_result_is_not_the_second_attempts() -> None:
    first, second = Slot(RUN, 2), Slot(RUN, 2, attempt=2)
    assert not verify_result_token(KEY, second, result_token(KEY, first))
    assert not verify_result_token(KEY, first, result_token(KEY, second))


def test_the_default_slot_keeps_the_names_running_deployments_use() -> None:
    """item=None, attempt=1 derive exactly what loadme derived from (run id, step) before Slot."""
    slot = Slot(RUN, 7)
    assert slot.group_name == f"loadme-{RUN}-7"
    assert slot.deployment_name == f"loadme-{RUN}-7-deploy"
    assert slot.blob_name == f"{RUN}/step-007.log"
    assert slot.row_key("deploying") == "007-deploying"
    assert slot.row_key("attempt_failed", "initjob") == "007-attempt_failed-initjob"
    assert slot.active_key == f"{RUN}-007"
    created = datetime(2026, 11, 25, 3, 0, 0, 123456, tzinfo=UTC)
    assert slot.order_key(created) == f"{int(created.timestamp() * 1000):013d}-{RUN}-007"
    assert slot.tags == {"loadme-run-id": RUN, "loadme-step": "7"}
    # The token an app before Slot gave step 7's container: results in flight still verify.
    before = hmac.new(KEY, f"loadme-result\n{RUN}\n7".encode(), hashlib.sha256).hexdigest()
    assert result_token(KEY, slot) == before
    assert slot.reserved() == {contract.RUN_ID: RUN, contract.STEP: "7", contract.CONTAINER_GROUP: slot.group_name}


def test_items_and_attempts_add_suffixes() -> None:
    slot = Slot(RUN, 1, item=3, attempt=2)
    assert (slot.group_name, slot.blob_name, slot.row_key("result"), slot.active_key) == (
        f"loadme-{RUN}-1-i3-a2", f"{RUN}/step-001-i0003-a02.log", "001-i0003-a02-result", f"{RUN}-001-i0003-a02")
    assert slot.tags == {"loadme-run-id": RUN, "loadme-step": "1", "loadme-item": "3", "loadme-attempt": "2"}
    assert Slot(RUN, 1, item=0).group_name == f"loadme-{RUN}-1-i0"  # item 0 is an item, not "no item"
    assert len(Slot(RUN, MAX_STEP, MAX_ITEM, MAX_ATTEMPT).group_name) <= 63


@pytest.mark.parametrize("name", [
    f"loadme-{RUN}-01", f"loadme-{RUN}-0", f"loadme-{RUN}-1000", f"loadme-{RUN}-1-a1", f"loadme-{RUN}-1-a0",
    f"loadme-{RUN}-1-i01", f"loadme-{RUN}-1-a2-i3", f"loadme-{RUN}-1-i10000", f"loadme-{RUN}-1-a100",
    f"loadme-{RUN.upper()}-1", f"loadme-{RUN}-1\n", f"loadme-{RUN}-\u0661", f"other-{RUN}-1", f"loadme-{RUN}-1-x",
])
def test_a_group_name_no_slot_makes_is_not_ours(name: str) -> None:
    assert Slot.from_group_name(name) is None


@pytest.mark.parametrize(("parse", "text"), [
    (Slot.from_blob_name, f"{RUN}/step-1.log"), (Slot.from_blob_name, f"{RUN}/step-001-a01.log"),
    (Slot.from_active_key, f"{RUN}-000"), (Slot.from_active_key, "run-a-001"),
    (Slot.from_order_key, f"123-{RUN}-001"), (Slot.from_order_key, "junk"),
    (Slot.from_deployment_name, f"loadme-{RUN}-1"),
    (lambda key: Slot.from_row_key(RUN, key), "000-requested"),
    (lambda key: Slot.from_row_key(RUN, key), "001-i0001-a01-result"),
    (lambda key: Slot.from_row_key(RUN, key), "001-Result"),
    (lambda key: Slot.from_row_key("run-a", key), "001-result"),
])
def test_other_forms_no_slot_makes_are_refused(parse: object, text: str) -> None:
    assert callable(parse) and parse(text) is None


@pytest.mark.parametrize("tags", [
    {"loadme-run-id": RUN}, {"loadme-step": "1"}, {"loadme-run-id": RUN, "loadme-step": "01"},
    {"loadme-run-id": RUN, "loadme-step": "+1"}, {"loadme-run-id": RUN, "loadme-step": " 1"},
    {"loadme-run-id": RUN, "loadme-step": "1", "loadme-attempt": "1"},
    {"loadme-run-id": "r" * 32, "loadme-step": "1"}, {"loadme-run-id": RUN, "loadme-step": "1000"},
])
def test_tags_no_slot_makes_name_no_slot(tags: dict[str, str]) -> None:
    assert Slot.from_tags(tags) is None


@given(st.from_regex(r"\Aloadme-[0-9a-f]{32}-[0-9]{1,4}(-i[0-9]{1,5})?(-a[0-9]{1,3})?\Z")
       | st.from_regex(r"\A[0-9a-f]{32}/step-[0-9]{3}(-i[0-9]{4})?(-a[0-9]{2})?\.log\Z")
       | st.from_regex(r"\A[0-9]{13}-[0-9a-f]{32}-[0-9]{3}(-i[0-9]{4})?(-a[0-9]{2})?\Z"))
def test_only_the_canonical_form_parses(text: str) -> None:
    """Whatever parses is exactly what its slot builds: one name per slot, one slot per name."""
    if (slot := Slot.from_group_name(text)) is not None:
        assert slot.group_name == text
    if (slot := Slot.from_blob_name(text)) is not None:
        assert slot.blob_name == text
    if (slot := Slot.from_order_key(text)) is not None:
        assert text.endswith(slot.active_key)


@given(slots, slots, times, times)
def test_order_keys_line_up_by_creation_time_then_slot(a: Slot, b: Slot, at: datetime, bt: datetime) -> None:
    # 2 ms apart, not 1: the key keeps `int(timestamp() * 1000)`, whose float may round a millisecond down.
    if abs(at - bt) >= timedelta(milliseconds=2):
        assert (a.order_key(at) < b.order_key(bt)) == (at < bt)
    if a.run_id == b.run_id and a.step != b.step:
        assert (a.order_key(at) < b.order_key(at)) == (a.step < b.step)


@pytest.mark.parametrize(("step", "item", "attempt"), [
    (0, None, 1), (MAX_STEP + 1, None, 1), (True, None, 1), (1, -1, 1), (1, MAX_ITEM + 1, 1), (1, False, 1),
    (1, None, 0), (1, None, MAX_ATTEMPT + 1), ("1", None, 1),
])
def test_a_slot_out_of_range_cannot_be_made(step: object, item: object, attempt: object) -> None:
    with pytest.raises(ValueError):
        Slot(RUN, step, item, attempt)  # type: ignore[arg-type]


def test_names_need_a_run_id_and_events_a_plain_name() -> None:
    with pytest.raises(ValueError):
        Slot("UPPER" * 6 + "ab", 1).group_name  # noqa: B018
    with pytest.raises(ValueError):
        Slot(RUN, 1).row_key("a02")  # would read as attempt 2's key


def test_the_image_can_ship_it(tmp_path: Path) -> None:
    """Stdlib-only, with the modules the image already ships (container/Dockerfile): it imports in an
    isolated interpreter that has nothing else of the repo."""
    (tmp_path / "loadme").mkdir()
    for module in ("__init__", "names", "contract", "slot"):
        shutil.copy(REPO / "loadme" / f"{module}.py", tmp_path / "loadme" / f"{module}.py")
    code = (f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import loadme.slot as s; "
            f"print(s.Slot({RUN!r}, 1).group_name)")
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"loadme-{RUN}-1"

