"""Property-based fuzzing: init_job never answers 5xx, and the variable codec keeps its bounds."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loadme.context import Context
from loadme.contract import parse_output_lines
from loadme.envelope import (
    MAX_LOG_TAIL_CHARS,
    MAX_PLAN_BYTES,
    QUEUE_MESSAGE_LIMIT,
    StepPlan,
    bounded_tail,
    decode,
    decode_queue_text,
)
from loadme.errors import VariableError
from loadme.variables import MAX_VARIABLES_BYTES, VariableFactory, variables_size
from tests.support import post_json, response_json, result_message, step_message

FIELDS = ["variables", "image", "command", "steps", "timeout_seconds"]
names = st.one_of(st.from_regex(r"\A___[A-Za-z_][A-Za-z0-9_]{0,20}\Z"), st.text(max_size=12))
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)
bodies = st.one_of(
    st.fixed_dictionaries({}, optional={
        "variables": st.one_of(st.dictionaries(names, st.one_of(st.text(max_size=30), json_scalars), max_size=6),
                               json_values),
        "image": st.one_of(st.sampled_from(["python:3.13-slim", "acr.azurecr.io/job:1"]), json_values),
        "command": st.one_of(st.lists(st.text(max_size=10), max_size=4), json_values),
        "steps": st.one_of(st.lists(st.fixed_dictionaries(
            {"command": st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=3)}), max_size=3),
            json_values),
        "timeout_seconds": st.one_of(st.integers(-5, 10**7), json_scalars),
    }),
    st.dictionaries(st.sampled_from([*FIELDS, "x", ""]), json_values, max_size=4),
    json_values,
)
raw_bodies = st.one_of(bodies.map(lambda b: json.dumps(b).encode()), st.binary(max_size=200))
headers = st.fixed_dictionaries({"Content-Type": st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "APPLICATION/JSON", "text/plain", "", "application/xml"])},
    optional={"Idempotency-Key": st.text(max_size=40)})


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(body=raw_bodies, request_headers=headers)
def test_init_job_never_answers_5xx(context: Context, body: bytes, request_headers: dict[str, str]) -> None:
    response, initjob = post_json(body, request_headers)
    assert response.status_code in (202, 400, 403, 413, 415, 422), response.get_body()
    payload = response_json(response)
    if response.status_code == 202:
        assert set(payload) == {"run_id", "status_url"} and (initjob.get() is not None) in (True, False)
    else:
        assert isinstance(payload["error"], str) and payload["error"]
        assert initjob.get() is None


factory = VariableFactory("___")
values = st.text(alphabet=st.characters(codec="utf-8"), max_size=2000)
variable_sets = st.dictionaries(st.from_regex(r"\A___[A-Za-z_][A-Za-z0-9_]{0,30}\Z"), values, max_size=40)


@settings(max_examples=500, deadline=None)
@given(variables=variable_sets, tail=st.text(max_size=6000))
def test_variable_codec_round_trips_within_bounds(variables: dict[str, str], tail: str) -> None:
    try:
        accepted = factory.validate_requested(variables)
    except VariableError as err:
        if any("\x00" in value for value in variables.values()):  # no process environment carries a NUL
            assert err.status == 400 and "NUL character" in err.message
        else:
            assert err.status == 413 and variables_size(variables) > MAX_VARIABLES_BYTES
        return
    assert variables_size(accepted) <= MAX_VARIABLES_BYTES
    step = step_message(variables=accepted)
    result = result_message(step, log_tail=bounded_tail(tail))
    for message in (step, result):
        assert decode_queue_text(message.to_queue_text(), type(message)) == message
        assert len(message.to_queue_text()) <= QUEUE_MESSAGE_LIMIT


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.from_regex(r"\A___[A-Za-z_][A-Za-z0-9_]{0,10}\Z"),
                       st.text(max_size=50).filter(lambda v: "\n" not in v and "\r" not in v), max_size=10))
def test_job_output_lines_round_trip(outputs: dict[str, str]) -> None:
    text = "".join(f"{name}={value}\n" for name, value in outputs.items())
    found, bad = parse_output_lines(text)
    assert (found, bad) == (outputs, [])


def _worst_case_messages() -> list[Any]:
    """Messages at every bound at once: the largest variables, plan and log tail allowed."""
    big_value = "\u00e9" * ((MAX_VARIABLES_BYTES - 20) // 6)  # escapes to six bytes a character
    variables = {"___Big": big_value}
    assert variables_size(variables) <= MAX_VARIABLES_BYTES
    per_step = MAX_PLAN_BYTES // 20 - 40
    plan = tuple(StepPlan("i", ("x" * per_step,)) for _ in range(20))
    step = step_message(variables=variables, steps=plan, trigger="timer")
    return [step, result_message(step, 255, log_tail=bounded_tail("\x01" * 10_000))]


def test_messages_at_every_bound_still_fit_the_queue() -> None:
    for message in _worst_case_messages():
        assert len(message.to_queue_text()) <= QUEUE_MESSAGE_LIMIT
        assert decode(message.to_json(), type(message)) == message
    assert len(json.dumps(bounded_tail("\x01" * 10_000))) - 2 <= MAX_LOG_TAIL_CHARS
