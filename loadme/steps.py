"""The one definition of a run's step: `StepPlan`, whose fields each carry a `StepRule`.

From its fields come the request validation of a step (loadme.api), the form messages and the
journal hold (`as_dict`, `from_dict`, `from_message`, used by loadme.envelope) and the OpenAPI schema
of a step (`openapi_schema`, used by loadme.openapi); tests/test_steps.py checks that the three agree
field by field. A field's type is its annotation: `str` (a JSON string) or `tuple[str, ...]` (a JSON
array of strings).

Two levels of checking. A request's step is checked against each field's bounds (size, pattern,
secret names), and an unknown key is a 400 naming the allowed ones. A step in a message is checked
only for its type and `min_items` (the app wrote it within the bounds, and loadme.trust compares a
message's plan with the journal's); the journal's rows are the app's own and are not checked.

The rule for versions, so that two releases can run side by side during a rollout:
- a field with a default may be absent: a message or journal row from an older release lacks it (a
  plan journaled before secrets were per step has no `secrets`);
- a step key this release does not know is ignored, so a message from a newer release is not
  poisoned by it; its plan and the journal's are both read without it, so loadme.trust still finds
  them equal. A new field must therefore have a default under which the step behaves as it did
  before the field existed (an older instance runs the step that way during the rollout). A change
  an older reader must not ignore bumps envelope.SCHEMA_VERSION, with readers deployed first.
- a known field of the wrong type still refuses the message (EnvelopeError, so it goes to poison);
  the message's own fields, outside its steps, stay strict (loadme.envelope).

Stdlib-only: loadme.envelope imports it, so the container image ships it (container/Dockerfile).
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from loadme.errors import EnvelopeError

MAX_IMAGE_CHARS = 256
MAX_COMMAND_ARGS = 64
MAX_COMMAND_BYTES = 8 * 1024
IMAGE_PATTERN = r"^[a-z0-9]+(?:[._\-/:@][A-Za-z0-9]+)*$"


@dataclass(frozen=True)
class StepRule:
    """What a request may give for one field of a step, beyond the field's type."""

    description: str
    request_error: str  # the 400's text; {where} is the field's place in the request
    example: Any
    # A request's step without the field takes the run's value ("default"), or gets the run's value
    # and its own ("added"); "" means the step must give it.
    from_run: Literal["", "default", "added"] = ""
    max_length: int | None = None
    pattern: str | None = None
    min_items: int = 0  # also checked in messages
    max_items: int | None = None
    item_min_length: int = 0
    item_no_nul: bool = False  # not in the OpenAPI schema (a NUL in a pattern helps no client)
    max_bytes: int | None = None  # of all items as UTF-8; not in the OpenAPI schema (it has no such bound)
    secret_names: bool = False  # each item names a secret variable SECRET_VARIABLES defines


def _rule(rule: StepRule) -> dict[str, StepRule]:
    return {"rule": rule}


@dataclass(frozen=True)
class StepPlan:
    """One step of a run: the image, the job command the runner starts, and the names of the secret
    variables its container gets (only those)."""

    image: str = field(metadata=_rule(StepRule(
        "The container image (an ALLOWED_IMAGES entry must allow it)",
        "'{where}' must be an image reference like registry/name:tag", "loadme-runner:1",
        from_run="default", max_length=MAX_IMAGE_CHARS, pattern=IMAGE_PATTERN)))
    command: tuple[str, ...] = field(metadata=_rule(StepRule(
        f"The job's command line, at most {MAX_COMMAND_BYTES} bytes in all, without NUL characters",
        f"'{{where}}' must be an array of 1-{MAX_COMMAND_ARGS} non-empty strings (at most {MAX_COMMAND_BYTES} bytes)",
        ["python", "jobs/demo_job.py"], min_items=1, max_items=MAX_COMMAND_ARGS, item_min_length=1,
        item_no_nul=True, max_bytes=MAX_COMMAND_BYTES)))
    secrets: tuple[str, ...] = field(default=(), metadata=_rule(StepRule(
        "Names of secret variables (SECRET_VARIABLES) the container gets; no others",
        "'{where}' must be an array of secret variable names", ["___ApiToken"],
        from_run="added", secret_names=True)))

    def as_dict(self) -> dict[str, Any]:
        """The plan as messages and the journal hold it (each field, in order)."""
        return {f.name: list(getattr(self, f.name)) if f.array else getattr(self, f.name) for f in FIELDS}

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> StepPlan:
        """The plan from `as_dict`, as the journal holds it. Raises KeyError for a missing required field."""
        values: dict[str, Any] = {f.name: tuple(value[f.name]) if f.array else value[f.name]
                                  for f in FIELDS if f.required or f.name in value}
        return cls(**values)

    @classmethod
    def from_message(cls, value: Any) -> StepPlan:
        """A step of a decoded message, checked for type (unknown keys ignored: see the module's rule).
        Raises EnvelopeError."""
        if (not isinstance(value, dict) or not set(value) >= REQUIRED
                or not all(f.accepts(value[f.name], bounded=False) for f in FIELDS if f.name in value)):
            raise EnvelopeError(MESSAGE_SHAPE)
        return cls.from_dict(value)


@dataclass(frozen=True)
class PlanField:
    """A field of `StepPlan` with its rule, as the validators and the schema read it."""

    name: str
    array: bool  # tuple[str, ...] in StepPlan, a JSON array of strings; otherwise a string
    required: bool  # in a message or journal row: the field has no default
    rule: StepRule

    def accepts(self, value: Any, *, bounded: bool) -> bool:
        """Whether a decoded JSON value is one for this field: its type and `min_items`, and with
        `bounded` (a request) every bound but the secret names, which need the settings."""
        rule = self.rule
        if not self.array:
            return isinstance(value, str) and (not bounded or (
                (rule.max_length is None or len(value) <= rule.max_length)
                and (rule.pattern is None or re.fullmatch(rule.pattern, value) is not None)))
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value) \
                or len(value) < rule.min_items:
            return False
        return not bounded or (
            (rule.max_items is None or len(value) <= rule.max_items)
            and all(len(item) >= rule.item_min_length and not (rule.item_no_nul and "\x00" in item)
                    for item in value)
            and (rule.max_bytes is None or sum(len(item.encode()) for item in value) <= rule.max_bytes))

    def openapi_schema(self) -> dict[str, Any]:
        """The field's JSON schema (OpenAPI 3.1)."""
        rule = self.rule
        schema: dict[str, Any]
        if self.array:
            item: dict[str, Any] = {"type": "string"}
            if rule.item_min_length:
                item["minLength"] = rule.item_min_length
            schema = {"type": "array", "items": item}
            if rule.min_items:
                schema["minItems"] = rule.min_items
            if rule.max_items is not None:
                schema["maxItems"] = rule.max_items
        else:
            schema = {"type": "string"}
            if rule.max_length is not None:
                schema["maxLength"] = rule.max_length
            if rule.pattern is not None:
                schema["pattern"] = rule.pattern
        return {**schema, "description": rule.description, "examples": [rule.example]}


def _fields() -> tuple[PlanField, ...]:
    hints = typing.get_type_hints(StepPlan)
    fields = []
    for f in dataclasses.fields(StepPlan):
        if hints[f.name] not in (str, tuple[str, ...]):
            raise TypeError(f"StepPlan field {f.name!r} has a type the step schema does not know: {hints[f.name]!r}")
        fields.append(PlanField(f.name, hints[f.name] is not str, f.default is dataclasses.MISSING,
                                f.metadata["rule"]))
    return tuple(fields)


FIELDS = _fields()
FIELD = {f.name: f for f in FIELDS}
REQUIRED = frozenset(f.name for f in FIELDS if f.required)
REQUIRED_IN_REQUEST = tuple(f.name for f in FIELDS if not f.rule.from_run)
OPTIONAL_IN_REQUEST = tuple(f.name for f in FIELDS if f.rule.from_run)
MESSAGE_SHAPE = "each step must be {" + ", ".join(
    f"'{f.name}': {'[str, ...]' if f.array else 'str'}" for f in FIELDS) + "}"
REQUEST_SHAPE = ("must be an object with " + " and ".join(f"'{n}'" for n in REQUIRED_IN_REQUEST)
                 + " and optional " + " and ".join(f"'{n}'" for n in OPTIONAL_IN_REQUEST))


def openapi_schema(*, request: bool) -> dict[str, Any]:
    """The JSON schema of a step: in a request (strict, what it must give) or in a response's plan
    (as the journal holds it: an older row may lack a field with a default)."""
    required = list(REQUIRED_IN_REQUEST) if request else [f.name for f in FIELDS if f.required]
    schema: dict[str, Any] = {"type": "object", "required": required,
                              "properties": {f.name: f.openapi_schema() for f in FIELDS}}
    if request:
        schema["additionalProperties"] = False
        for f in FIELDS:
            if f.rule.from_run:
                schema["properties"][f.name]["description"] += FROM_RUN[f.rule.from_run]
    return schema


FROM_RUN = {"default": " (default: the run's)", "added": " (with the run's)"}
