"""The message envelope: round trips, strict decoding, base64 on the wire."""

from __future__ import annotations

import base64
import json

import pytest

from loadme.envelope import (
    SCHEMA_VERSION,
    RemovalMessage,
    ResultMessage,
    StepMessage,
    StepPlan,
    decode,
    decode_queue_text,
)
from loadme.errors import EnvelopeError

RUN = "a" * 32
STEP = StepMessage(RUN, 1, attempt=1, created_at="2026-01-01T00:00:00+00:00", deadline="2026-01-01T01:00:00+00:00",
                   trigger="http", variables={"___A": "1"}, steps=(StepPlan("img:1", ("python", "job.py")),))
RESULT = ResultMessage(RUN, 1, token="t" * 64, exit_code=3, variables={"___A": "1"}, log_tail="tail",
                       finished_at="2026-01-01T00:10:00+00:00", log_uploaded=True)
REMOVAL = RemovalMessage(RUN, 1, reason="finished")


@pytest.mark.parametrize("message", [STEP, RESULT, REMOVAL])
def test_round_trip(message: StepMessage | ResultMessage | RemovalMessage) -> None:
    assert decode(message.to_json(), type(message)) == message
    assert decode_queue_text(message.to_queue_text(), type(message)) == message


def test_wire_format_is_versioned_json_in_base64() -> None:
    data = json.loads(base64.b64decode(STEP.to_queue_text()))
    assert data["schema"] == SCHEMA_VERSION and data["kind"] == "initjob"
    assert data["steps"] == [{"image": "img:1", "command": ["python", "job.py"], "secrets": []}]


def _mutated(message: StepMessage, **changes: object) -> str:
    data = json.loads(message.to_json())
    for key, value in changes.items():
        if value is ...:
            del data[key]
        else:
            data[key] = value
    return json.dumps(data)


@pytest.mark.parametrize(("changes", "reason"), [
    ({"schema": 1}, "unknown schema version 1"),
    ({"schema": ...}, "unknown schema version None"),
    ({"kind": "result"}, "kind 'result'"),
    ({"run_id": ...}, "missing ['run_id']"),
    ({"extra": 1}, "unexpected ['extra']"),
    ({"step": "1"}, "'step' must be int"),
    ({"step": True}, "'step' must be int"),
    ({"variables": {"___A": 1}}, "'variables' must be an object of strings"),
    ({"deadline": "tomorrow"}, "deadline is not an ISO 8601 timestamp"),
    ({"created_at": "2026-01-01T00:00:00"}, "created_at has no timezone"),
    ({"steps": []}, "'steps' must be a non-empty array"),
    ({"steps": [{"image": "i"}]}, "each step must be"),
    ({"step": 2}, "step 2 is outside the run's 1 steps"),
])
def test_strict_decoding_says_what_is_wrong(changes: dict[str, object], reason: str) -> None:
    with pytest.raises(EnvelopeError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        decode(_mutated(STEP, **changes), StepMessage)


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '"text"'])
def test_not_an_object(text: str) -> None:
    with pytest.raises(EnvelopeError):
        decode(text, StepMessage)


def test_non_base64_queue_text() -> None:
    with pytest.raises(EnvelopeError, match="not valid base64"):
        decode_queue_text("{not base64!}", StepMessage)


def test_the_header_is_minimal_and_each_kind_carries_only_its_fields() -> None:
    assert json.loads(REMOVAL.to_json()) == {"schema": SCHEMA_VERSION, "kind": "removeinfra", "run_id": RUN,
                                             "step": 1, "reason": "finished"}
    assert set(json.loads(RESULT.to_json())) == {"schema", "kind", "run_id", "step", "token", "exit_code",
                                                 "variables", "log_tail", "finished_at", "log_uploaded"}


def test_a_field_with_a_default_may_be_absent_but_not_one_without() -> None:
    data = json.loads(RESULT.to_json())
    del data["log_uploaded"]  # added after the first release of schema 2: an older runner omits it
    assert decode(json.dumps(data), ResultMessage).log_uploaded is False
    del data["finished_at"]
    with pytest.raises(EnvelopeError, match=r"missing \['finished_at'\]"):
        decode(json.dumps(data), ResultMessage)
    bad = {**json.loads(RESULT.to_json()), "finished_at": "yesterday"}
    with pytest.raises(EnvelopeError, match="finished_at is not an ISO 8601 timestamp"):
        decode(json.dumps(bad), ResultMessage)


def test_token_is_not_in_repr() -> None:
    assert "t" * 64 not in repr(RESULT)


@pytest.mark.parametrize("message", [STEP, RESULT, REMOVAL])
@pytest.mark.parametrize(("header", "reason"), [
    ({"run_id": "idx-active"}, "'run_id' must be a run id (32 lowercase hex characters), got 'idx-active'"),
    ({"run_id": "idx-day-20261125"}, "'run_id' must be a run id"),
    ({"run_id": "A" * 32}, "'run_id' must be a run id"),
    ({"run_id": "a" * 32 + "\n"}, "'run_id' must be a run id"),
    ({"run_id": "x" * 5000}, f"got '{'x' * 40}'$"),  # the sender's text is cut short in the reason
    ({"step": 0}, "'step' must be from 1 to 999, got 0"),
    ({"step": 1000}, "'step' must be from 1 to 999, got 1000"),
])
def test_every_kind_refuses_a_header_the_app_cannot_have_written(
        message: StepMessage | ResultMessage | RemovalMessage, header: dict[str, object], reason: str) -> None:
    data = {**json.loads(message.to_json()), **header}
    with pytest.raises(EnvelopeError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        decode(json.dumps(data), type(message))
