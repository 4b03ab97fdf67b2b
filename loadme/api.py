"""HTTP request parsing for `init_job`: strict, and every rejection names the problem.

Body: `{"variables": {"___Name": "value"}, "secrets": [names], "image": str, "command": [str],
"steps": [{"image", "command", "secrets"}], "timeout_seconds": int}`; all optional. A step's container
gets the run's `secrets` and its own, and no other secret; an image outside ALLOWED_IMAGES is a 403,
and so is a secret named for an image SECRET_VARIABLES does not bind it to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from loadme.envelope import MAX_PLAN_BYTES, plan_size
from loadme.errors import RequestError
from loadme.settings import MAX_TIMEOUT_SECONDS, Settings
from loadme.steps import FIELD, REQUEST_SHAPE, REQUIRED_IN_REQUEST, PlanField, StepPlan
from loadme.steps import FIELDS as STEP_FIELDS
from loadme.variables import VariableFactory

MAX_BODY_BYTES = 64 * 1024
MAX_STEPS = 20
MAX_IDEMPOTENCY_KEY = 200
FIELDS = ("variables", "secrets", "image", "command", "steps", "timeout_seconds")


@dataclass(frozen=True)
class StartRequest:
    """A validated request to start a run."""

    variables: dict[str, str]
    steps: tuple[StepPlan, ...]
    timeout_seconds: int


def error_body(message: str) -> str:
    """The JSON error body every 4xx answer carries."""
    return json.dumps({"error": message})


def parse_start_request(
    body: bytes, content_type: str | None, settings: Settings, factory: VariableFactory
) -> StartRequest:
    """Validate an `init_job` request. Raises RequestError (400, 413 or 415) naming the problem."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise RequestError(415, f"Content-Type must be application/json, got {content_type or 'none'!r}")
    if len(body) > MAX_BODY_BYTES:
        raise RequestError(413, f"body is {len(body)} bytes; the limit is {MAX_BODY_BYTES}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(400, f"body is not UTF-8: {exc.reason} at byte {exc.start}") from exc
    if not text.strip():
        raise RequestError(400, "body is empty; send a JSON object like {\"variables\": {}}")
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise RequestError(400, f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from exc
    except ValueError as exc:
        raise RequestError(400, f"invalid JSON: {exc}") from exc
    return start_request_from_object(data, settings, factory)


def start_request_from_object(data: Any, settings: Settings, factory: VariableFactory) -> StartRequest:
    """Validate a decoded request object (also used for the timer's settings-defined runs)."""
    if not isinstance(data, dict):
        raise RequestError(400, f"body must be a JSON object, got {_json_type(data)}")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise RequestError(400, f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(FIELDS)}")
    variables = factory.validate_requested(data.get("variables", {}))
    secrets = _field(FIELD["secrets"], data.get("secrets", []), "secrets", settings)
    image = _field(FIELD["image"], data.get("image", settings.default_image), "image", settings)
    if "steps" in data and "command" in data:
        raise RequestError(400, "give either 'command' or 'steps', not both")
    if "steps" in data:
        steps = _steps(data["steps"], {"image": image, "secrets": secrets}, settings)
    else:
        command = _field(FIELD["command"], data.get("command", list(settings.default_command)), "command", settings)
        steps = (StepPlan(image, command, secrets),)
    for index, step in enumerate(steps, start=1):
        if not settings.allowed_images.allows(step.image):
            where = "image" if len(steps) == 1 and "steps" not in data else f"steps[{index}].image"
            raise RequestError(403, f"{where} {step.image!r} is not allowed: ALLOWED_IMAGES allows "
                                    f"{settings.allowed_images.describe()} (an operator adds a registry or "
                                    "repository there)")
        for name in step.secrets:
            if refusal := settings.secret_variables.refusal(name, step.image):
                where = "" if len(steps) == 1 and "steps" not in data else f"steps[{index}]: "
                raise RequestError(403, where + refusal)
    if plan_size(steps) > MAX_PLAN_BYTES:
        raise RequestError(413, f"the steps take {plan_size(steps)} bytes; the limit is {MAX_PLAN_BYTES}")
    timeout = data.get("timeout_seconds", settings.run_timeout_seconds)
    if type(timeout) is not int or not 1 <= timeout <= MAX_TIMEOUT_SECONDS:
        raise RequestError(400, f"'timeout_seconds' must be an integer from 1 to {MAX_TIMEOUT_SECONDS}")
    return StartRequest(variables, steps, timeout)


def check_idempotency_key(key: str | None) -> str | None:
    """The `Idempotency-Key` header value, if any. Raises RequestError when it is malformed."""
    if key is None:
        return None
    if not key.strip() or len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise RequestError(400, f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} printable characters")
    return key


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def _field(field: PlanField, value: Any, where: str, settings: Settings) -> Any:
    """A request's value for a step field (of a step, or the run's own), in StepPlan's type. Raises
    RequestError (400) with the field's message, or naming the unknown secrets."""
    if not field.accepts(value, bounded=True):
        raise RequestError(400, field.rule.request_error.format(where=where))
    if not field.array:
        return value
    if field.rule.secret_names:
        unknown = [name for name in value if name not in settings.secret_variables]
        if unknown:
            known = ", ".join(sorted(settings.secret_variables)) or "none"
            raise RequestError(400, f"'{where}' names unknown secret(s) {', '.join(unknown)}; SECRET_VARIABLES "
                                    f"defines {known}")
        return tuple(dict.fromkeys(value))
    return tuple(value)


def _steps(value: Any, run: dict[str, Any], settings: Settings) -> tuple[StepPlan, ...]:
    """The request's `steps`; a step without a field takes the run's (`run`: field name to value)."""
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_STEPS:
        raise RequestError(400, f"'steps' must be an array of 1-{MAX_STEPS} step objects")
    plans = []
    for index, step in enumerate(value, start=1):
        if not isinstance(step, dict) or not set(step) <= FIELD.keys() or not set(REQUIRED_IN_REQUEST) <= set(step):
            raise RequestError(400, f"steps[{index}] {REQUEST_SHAPE}")
        values: dict[str, Any] = {}
        for field in STEP_FIELDS:
            own = _field(field, step[field.name], f"steps[{index}].{field.name}", settings) \
                if field.name in step else None
            if field.rule.from_run == "added":
                values[field.name] = tuple(dict.fromkeys(run[field.name] + (own or ())))
            elif own is None:
                values[field.name] = run[field.name]
            else:
                values[field.name] = own
        plans.append(StepPlan(**values))
    return tuple(plans)
