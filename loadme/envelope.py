"""The versioned message envelope carried by the `initjob`, `stage2` and `removeinfra` queues.

Messages are compact JSON; on the wire the queue text is base64 of that JSON (the Functions
host's default `messageEncoding`). Decoding is strict: an unknown schema version, a missing or
extra field, or a wrong type raises EnvelopeError, so the host moves the message to poison.

Stdlib-only: the container image ships this module so the runner encodes results the same way.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any, ClassVar

from loadme.errors import EnvelopeError

SCHEMA_VERSION = 1
# Bounds that keep every message under the queue's 64 KiB (48 KiB of JSON before base64): the
# variables (30,000 bytes, loadme.variables), the step plan and the log tail, all as encoded JSON.
MAX_LOG_TAIL_CHARS = 4096
MAX_PLAN_BYTES = 8192
QUEUE_MESSAGE_LIMIT = 65536


@dataclass(frozen=True)
class StepPlan:
    """One step of a run: the image and the job command the runner starts."""

    image: str
    command: tuple[str, ...]


@dataclass(frozen=True)
class Message:
    """Header every message carries."""

    KIND: ClassVar[str] = ""

    run_id: str
    step: int
    attempt: int
    created_at: str
    deadline: str
    variables: dict[str, str]

    def to_json(self) -> str:
        """The message as compact JSON text (what a queue output binding takes)."""
        body = {"schema": SCHEMA_VERSION, "kind": self.KIND, **asdict(self)}
        return json.dumps(body, separators=(",", ":"), sort_keys=True)

    def to_queue_text(self) -> str:
        """The message as the base64 text a queue holds (for producers outside the host)."""
        return base64.b64encode(self.to_json().encode()).decode("ascii")


@dataclass(frozen=True)
class StepMessage(Message):
    """`initjob`: deploy step `step` of a run with these variables."""

    KIND: ClassVar[str] = "initjob"

    steps: tuple[StepPlan, ...] = ()
    trigger: str = "http"

    @property
    def plan(self) -> StepPlan:
        return self.steps[self.step - 1]


@dataclass(frozen=True)
class ResultMessage(Message):
    """`stage2`: the runner's report of a finished job, with the run/step result token."""

    KIND: ClassVar[str] = "result"

    token: str = field(default="", repr=False)
    exit_code: int = 0
    log_tail: str = ""
    finished_at: str = ""
    log_uploaded: bool = False  # the runner put its whole log in the logs container itself


@dataclass(frozen=True)
class RemovalMessage(Message):
    """`removeinfra`: archive the step's logs and delete its container group."""

    KIND: ClassVar[str] = "removeinfra"

    container_group: str = ""
    reason: str = ""


KINDS: dict[str, type[Message]] = {
    cls.KIND: cls for cls in (StepMessage, ResultMessage, RemovalMessage)
}


def bounded_tail(text: str, limit: int = MAX_LOG_TAIL_CHARS) -> str:
    """The end of `text`, cut so that it takes at most `limit` bytes as JSON (escapes included)."""
    tail = text[-limit:]
    while len(json.dumps(tail)) - 2 > limit:
        tail = tail[max(1, len(tail) // 8):]
    return tail


def plan_size(steps: tuple[StepPlan, ...]) -> int:
    """Bytes the step plan takes in a message."""
    return len(json.dumps([asdict(s) for s in steps], separators=(",", ":")))


def decode[M: Message](text: str | bytes, expected: type[M]) -> M:
    """Decode JSON message text into `expected`. Raises EnvelopeError saying what is wrong."""
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EnvelopeError(f"message is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise EnvelopeError("message is not a JSON object")
    version = data.pop("schema", None)
    if version != SCHEMA_VERSION:
        raise EnvelopeError(f"unknown schema version {version!r} (this app reads {SCHEMA_VERSION})")
    kind = data.pop("kind", None)
    if kind != expected.KIND:
        raise EnvelopeError(f"message kind {kind!r} where {expected.KIND!r} was expected")
    names = {f.name for f in fields(expected)}
    missing = sorted(names - data.keys() - _ADDED_FIELDS)
    extra = sorted(data.keys() - names)
    if missing or extra:
        raise EnvelopeError(f"{kind} message fields: missing {missing}, unexpected {extra}")
    _check_types(expected, data)
    if expected is StepMessage:
        data["steps"] = tuple(_step_plan(s) for s in data["steps"])
        if not 1 <= data["step"] <= len(data["steps"]):
            raise EnvelopeError(f"step {data['step']} is outside the run's {len(data['steps'])} steps")
    return expected(**data)


def decode_queue_text[M: Message](text: str, expected: type[M]) -> M:
    """Decode base64 queue text. Raises EnvelopeError if it is not base64 or not an envelope."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EnvelopeError("message is not valid base64") from exc
    return decode(raw, expected)


_SCALARS: dict[str, type] = {
    "run_id": str, "step": int, "attempt": int, "created_at": str, "deadline": str,
    "trigger": str, "token": str, "exit_code": int, "log_tail": str, "finished_at": str,
    "container_group": str, "reason": str, "log_uploaded": bool,
}
# Fields added after schema 1 was first shipped: a message from an older runner may lack them.
_ADDED_FIELDS = frozenset({"log_uploaded"})


def _check_types(cls: type[Message], data: dict[str, Any]) -> None:
    for name, value in data.items():
        if name == "variables":
            if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()
            ):
                raise EnvelopeError("field 'variables' must be an object of strings")
        elif name == "steps":
            if not isinstance(value, list) or not value:
                raise EnvelopeError("field 'steps' must be a non-empty array")
        else:
            wanted = _SCALARS[name]
            if type(value) is not wanted:
                raise EnvelopeError(f"field {name!r} must be {wanted.__name__}")
    for stamp in ("created_at", "deadline"):
        parse_time(data[stamp], stamp)


def _step_plan(value: Any) -> StepPlan:
    if (
        not isinstance(value, dict)
        or set(value) != {"image", "command"}
        or not isinstance(value["image"], str)
        or not isinstance(value["command"], list)
        or not value["command"]
        or not all(isinstance(c, str) for c in value["command"])
    ):
        raise EnvelopeError("each step must be {'image': str, 'command': [str, ...]}")
    return StepPlan(image=value["image"], command=tuple(value["command"]))


def parse_time(value: str, what: str = "timestamp") -> datetime:
    """Parse an ISO 8601 timestamp with a timezone. Raises EnvelopeError if it is not one."""
    try:
        stamp = datetime.fromisoformat(value)
    except (TypeError, ValueError) as exc:
        raise EnvelopeError(f"{what} is not an ISO 8601 timestamp: {value!r}") from exc
    if stamp.tzinfo is None:
        raise EnvelopeError(f"{what} has no timezone: {value!r}")
    return stamp
