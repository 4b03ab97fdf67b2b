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

HEADER = {"run_id": "a" * 32, "step": 1, "attempt": 1, "created_at": "2026-01-01T00:00:00+00:00",
          "deadline": "2026-01-01T01:00:00+00:00", "variables": {"___A": "1"}}
STEP = StepMessage(**HEADER, steps=(StepPlan("img:1", ("python", "job.py")),), trigger="http")
RESULT = ResultMessage(**HEADER, token="t" * 64, exit_code=3, log_tail="tail", finished_at="x")
REMOVAL = RemovalMessage(**HEADER, container_group="loadme-x-1", reason="finished")


@pytest.mark.parametrize("message", [STEP, RESULT, REMOVAL])
def test_round_trip(message: StepMessage | ResultMessage | RemovalMessage) -> None:
    assert decode(message.to_json(), type(message)) == message
    assert decode_queue_text(message.to_queue_text(), type(message)) == message


def test_wire_format_is_versioned_json_in_base64() -> None:
    data = json.loads(base64.b64decode(STEP.to_queue_text()))
    assert data["schema"] == SCHEMA_VERSION and data["kind"] == "initjob"
    assert data["steps"] == [{"image": "img:1", "command": ["python", "job.py"]}]


def _mutated(message: StepMessage, **changes: object) -> str:
    data = json.loads(message.to_json())
    for key, value in changes.items():
        if value is ...:
            del data[key]
        else:
            data[key] = value
    return json.dumps(data)


@pytest.mark.parametrize(("changes", "reason"), [
    ({"schema": 2}, "unknown schema version 2"),
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


def test_token_is_not_in_repr() -> None:
    assert "t" * 64 not in repr(RESULT)
