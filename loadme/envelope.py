"""The versioned message envelope carried by the `initjob`, `stage2` and `removeinfra` queues.

Every message is compact JSON with a minimal header (`schema`, `kind`, `run_id`, `step`) and the
fields of its kind; on the wire the queue text is base64 of that JSON (the Functions host's default
`messageEncoding`). Decoding is derived from the dataclass fields and is strict: an unknown schema
version or kind, a missing field, an unexpected field, a wrong type, or a header the app cannot have
written (a run id that is not one, a step outside 1..999) raises EnvelopeError, so the host moves
the message to poison. A field with a default may be absent (added in a later release). A step
of the plan is `loadme.steps.StepPlan`, decoded by its rule: a step key this release does not know
is ignored, so a newer release's optional step field does not poison the message (loadme.steps).

Schema 2 (this one) replaced schema 1, whose messages all carried the whole header with
placeholder values; a schema 1 message is refused as unknown.

Stdlib-only (with loadme.steps): the container image ships this module so the runner encodes results
the same way.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import typing
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from loadme.errors import EnvelopeError
from loadme.names import MAX_STEP, is_run_id
from loadme.steps import StepPlan as StepPlan  # re-exported: the plan a StepMessage carries

SCHEMA_VERSION = 2
# Bounds that keep every message under the queue's 64 KiB (48 KiB of JSON before base64): the
# variables (30,000 bytes, loadme.variables), the step plan and the log tail, all as encoded JSON.
MAX_LOG_TAIL_CHARS = 4096
MAX_PLAN_BYTES = 8192
QUEUE_MESSAGE_LIMIT = 65536
TIMESTAMP = {"timestamp": True}  # field metadata: an ISO 8601 timestamp with a timezone


@dataclass(frozen=True)
class Message:
    """The header every message carries."""

    KIND: ClassVar[str] = ""

    run_id: str
    step: int

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

    attempt: int
    created_at: str = field(metadata=TIMESTAMP)
    deadline: str = field(metadata=TIMESTAMP)
    trigger: str
    variables: dict[str, str]
    steps: tuple[StepPlan, ...]

    @property
    def plan(self) -> StepPlan:
        return self.steps[self.step - 1]


@dataclass(frozen=True)
class ResultMessage(Message):
    """`stage2`: the runner's report of a finished job, with the run/step result token."""

    KIND: ClassVar[str] = "result"

    token: str = field(repr=False)
    exit_code: int
    variables: dict[str, str]
    log_tail: str
    finished_at: str = field(metadata=TIMESTAMP)
    log_uploaded: bool = False  # the runner put its whole log in the logs container itself


@dataclass(frozen=True)
class RemovalMessage(Message):
    """`removeinfra`: archive the step's log if need be and delete its container group."""

    KIND: ClassVar[str] = "removeinfra"

    reason: str


KINDS: dict[str, type[Message]] = {cls.KIND: cls for cls in (StepMessage, ResultMessage, RemovalMessage)}


def bounded_tail(text: str, limit: int = MAX_LOG_TAIL_CHARS) -> str:
    """The end of `text`, cut so that it takes at most `limit` bytes as JSON (escapes included)."""
    tail = text[-limit:]
    while len(json.dumps(tail)) - 2 > limit:
        tail = tail[max(1, len(tail) // 8):]
    return tail


def plan_size(steps: tuple[StepPlan, ...]) -> int:
    """Bytes the step plan takes in a message."""
    return len(json.dumps([s.as_dict() for s in steps], separators=(",", ":")))


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
    fields = {f.name: f for f in dataclasses.fields(expected)}
    required = {name for name, f in fields.items()
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    missing, extra = sorted(required - data.keys()), sorted(data.keys() - fields.keys())
    if missing or extra:
        raise EnvelopeError(f"{kind} message fields: missing {missing}, unexpected {extra}")
    hints = _type_hints(expected)
    values = {name: _field_value(name, hints[name], value, fields[name].metadata) for name, value in data.items()}
    _check_header(values["run_id"], values["step"])
    message = expected(**values)
    if isinstance(message, StepMessage) and not 1 <= message.step <= len(message.steps):
        raise EnvelopeError(f"step {message.step} is outside the run's {len(message.steps)} steps")
    return message


def _check_header(run_id: str, step: int) -> None:
    """Refuse a header the app cannot have written, before anything reads or writes storage with it:
    the run id names a journal partition (an index partition such as `idx-active` is not one)."""
    if not is_run_id(run_id):
        # The text is the sender's: the reason (and the log line it ends up in) shows only its start.
        raise EnvelopeError(f"field 'run_id' must be a run id (32 lowercase hex characters), got {run_id[:40]!r}")
    if not 1 <= step <= MAX_STEP:
        raise EnvelopeError(f"field 'step' must be from 1 to {MAX_STEP}, got {step}")


_HINTS: dict[type[Message], dict[str, Any]] = {}


def _type_hints(kind: type[Message]) -> dict[str, Any]:
    """A message kind's field annotations, resolved once: resolving them was most of a decode's time."""
    hints = _HINTS.get(kind)
    if hints is None:
        hints = _HINTS[kind] = typing.get_type_hints(kind)
    return hints


def decode_queue_text[M: Message](text: str, expected: type[M]) -> M:
    """Decode base64 queue text. Raises EnvelopeError if it is not base64 or not an envelope."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EnvelopeError("message is not valid base64") from exc
    return decode(raw, expected)


def _field_value(name: str, hint: Any, value: Any, metadata: typing.Mapping[str, Any]) -> Any:
    """Check one decoded field against its annotation; returns the value in the dataclass's type."""
    if hint in (str, int, bool):
        if type(value) is not hint:
            raise EnvelopeError(f"field {name!r} must be {hint.__name__}")
        if metadata.get("timestamp"):
            parse_time(value, name)
        return value
    if hint == dict[str, str]:
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise EnvelopeError(f"field {name!r} must be an object of strings")
        return value
    if hint == tuple[StepPlan, ...]:
        if not isinstance(value, list) or not value:
            raise EnvelopeError(f"field {name!r} must be a non-empty array")
        return tuple(StepPlan.from_message(item) for item in value)
    raise TypeError(f"envelope field {name!r} has an annotation decode does not know: {hint!r}")


def parse_time(value: str, what: str = "timestamp") -> datetime:
    """Parse an ISO 8601 timestamp with a timezone. Raises EnvelopeError if it is not one."""
    try:
        stamp = datetime.fromisoformat(value)
    except (TypeError, ValueError) as exc:
        raise EnvelopeError(f"{what} is not an ISO 8601 timestamp: {value!r}") from exc
    if stamp.tzinfo is None:
        raise EnvelopeError(f"{what} has no timezone: {value!r}")
    return stamp
