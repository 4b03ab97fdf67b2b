"""The one step definition (loadme.steps): the request validator, the OpenAPI schema and StepPlan (with
the envelope's decoding) agree field by field, for every field the definition has, so a field added
there shows up in all of them."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from loadme import steps
from loadme.api import start_request_from_object
from loadme.envelope import StepMessage, decode
from loadme.errors import EnvelopeError, RequestError
from loadme.openapi import openapi_document
from loadme.settings import Settings
from loadme.steps import FIELDS, StepPlan
from loadme.variables import VariableFactory
from tests.support import app_settings, step_message

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = {f.name: f.rule.example for f in FIELDS}


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    # Parsing a request reads no storage: a connection string that names no server will do.
    return Settings.from_mapping(app_settings("UseDevelopmentStorage=true", tmp_path_factory.mktemp("containers")))


def _api_verdict(settings: Settings, step: Any) -> str | None:
    """None when loadme.api takes the step (a 403 is a policy on a valid step), else its 400's message."""
    factory = VariableFactory(settings.variable_prefix, settings.secret_variables)
    try:
        start_request_from_object({"steps": [step]}, settings, factory)
    except RequestError as exc:
        return None if exc.status == 403 else str(exc)
    return None


def _schema(request: bool) -> Draft202012Validator:
    document = openapi_document()
    if request:
        ref = {"$ref": "#/components/schemas/StartRequest/properties/steps/items"}
    else:
        ref = {"$ref": "#/components/schemas/RunStatus/properties/plan/items"}
    return Draft202012Validator({**ref, **document})


def _probes(field: steps.PlanField) -> list[tuple[str, Any]]:
    """Values at and past each bound of the field's rule that a JSON schema can state."""
    rule = field.rule
    probes: list[tuple[str, Any]] = [("example", rule.example)]
    if field.array:
        probes += [("not an array", "x"), ("an item not a string", [1])]
        if rule.min_items:
            probes += [("too few items", [rule.example[0]] * (rule.min_items - 1))]
        if rule.max_items is not None:
            probes += [("most items", [rule.example[0]] * rule.max_items),
                       ("too many items", [rule.example[0]] * (rule.max_items + 1))]
        if rule.item_min_length:
            probes += [("an item too short", ["x" * (rule.item_min_length - 1)] * max(1, rule.min_items))]
    else:
        probes += [("not a string", ["x"])]
        if rule.max_length is not None:
            probes += [("longest", "a" * rule.max_length), ("too long", "a" * (rule.max_length + 1))]
        if rule.pattern is not None:
            probes += [("off the pattern", " " + rule.example)]
    return probes


def test_the_three_have_the_same_fields() -> None:
    names = [f.name for f in dataclasses.fields(StepPlan)]
    assert [f.name for f in FIELDS] == names
    assert list(_schema(True).schema["components"]["schemas"]["StartRequest"]["properties"]["steps"]["items"]
                ["properties"]) == names
    assert list(StepPlan(**{f.name: (tuple(f.rule.example) if f.array else f.rule.example) for f in FIELDS})
                .as_dict()) == names


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.name)
def test_request_validator_and_schema_agree_on_each_bound(settings: Settings, field: steps.PlanField) -> None:
    validator = _schema(True)
    for what, value in _probes(field):
        step = {**EXAMPLE, field.name: value}
        refused = _api_verdict(settings, step)
        schema_errors = [e.message for e in validator.iter_errors(step)]
        assert (refused is None) == (not schema_errors), (what, value, refused, schema_errors)
        if refused is not None:
            assert refused == field.rule.request_error.format(where=f"steps[1].{field.name}"), what


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.name)
def test_bounds_the_schema_cannot_state_are_still_the_validators(settings: Settings, field: steps.PlanField) -> None:
    rule = field.rule
    probes = []
    if rule.item_no_nul:
        probes.append(["a\x00b"])
    if rule.max_bytes is not None:
        count = rule.max_items or 1
        probes.append(["x" * (rule.max_bytes // count + 1)] * count)
    for value in probes:
        assert _api_verdict(settings, {**EXAMPLE, field.name: value}) == rule.request_error.format(
            where=f"steps[1].{field.name}")
        assert not list(_schema(True).iter_errors({**EXAMPLE, field.name: value}))  # documented in words
        assert rule.description


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.name)
def test_a_field_is_required_in_a_request_exactly_where_the_schema_says(settings: Settings,
                                                                         field: steps.PlanField) -> None:
    without = {name: value for name, value in EXAMPLE.items() if name != field.name}
    required = field.name in _schema(True).schema["components"]["schemas"]["StartRequest"]["properties"][
        "steps"]["items"]["required"]
    assert required == (not field.rule.from_run)
    assert (_api_verdict(settings, without) is not None) == required
    assert bool(list(_schema(True).iter_errors(without))) == required


def test_an_unknown_key_is_refused_in_a_request_and_by_the_schema(settings: Settings) -> None:
    step = {**EXAMPLE, "retries": 1}
    assert _api_verdict(settings, step) == (
        "steps[1] must be an object with 'command' and optional 'image' and 'secrets'")
    assert list(_schema(True).iter_errors(step))


def _message_with_step(step: dict[str, Any]) -> str:
    data = json.loads(step_message().to_json())
    data["steps"] = [step]
    return json.dumps(data)


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.name)
def test_a_message_step_is_checked_for_each_fields_type(field: steps.PlanField) -> None:
    plan = StepPlan.from_message(EXAMPLE)
    assert plan.as_dict() == EXAMPLE and StepPlan.from_dict(plan.as_dict()) == plan
    assert not list(_schema(False).iter_errors(plan.as_dict()))  # the response's plan item
    wrong = "x" if field.array else ["x"]
    with pytest.raises(EnvelopeError, match=re.escape(steps.MESSAGE_SHAPE)):
        decode(_message_with_step({**EXAMPLE, field.name: wrong}), StepMessage)
    without = {name: value for name, value in EXAMPLE.items() if name != field.name}
    if field.required:
        with pytest.raises(EnvelopeError, match=re.escape(steps.MESSAGE_SHAPE)):
            decode(_message_with_step(without), StepMessage)
        assert list(_schema(False).iter_errors(without))
    else:  # an older release's message or journal row lacks it
        default = dataclasses.fields(StepPlan)[[f.name for f in FIELDS].index(field.name)].default
        assert getattr(decode(_message_with_step(without), StepMessage).plan, field.name) == default
        assert getattr(StepPlan.from_dict(without), field.name) == default
        assert not list(_schema(False).iter_errors(without))


def test_a_step_key_from_a_newer_release_does_not_poison_a_message() -> None:
    """The version rule (loadme.steps): the key is ignored, in the message as in the journal's plan, so
    loadme.trust still finds the two equal; a known field of the wrong type still refuses it."""
    newer = {**EXAMPLE, "retries": 2}
    message = decode(_message_with_step(newer), StepMessage)
    assert message.plan == StepPlan.from_dict(newer) == StepPlan.from_message(EXAMPLE)
    with pytest.raises(EnvelopeError, match=re.escape(steps.MESSAGE_SHAPE)):
        decode(_message_with_step({**newer, "command": []}), StepMessage)
    data = {**json.loads(_message_with_step(newer)), "retries": 2}  # outside the steps, decoding stays strict
    with pytest.raises(EnvelopeError, match=r"unexpected \['retries'\]"):
        decode(json.dumps(data), StepMessage)


def test_the_image_ships_what_the_envelope_imports(tmp_path: Path) -> None:
    """The envelope imports in an isolated interpreter holding only the loadme files container/Dockerfile
    copies, and decodes a step there."""
    copy = next(line for line in (REPO / "container" / "Dockerfile").read_text().splitlines()
                if line.startswith("COPY loadme/"))
    (tmp_path / "loadme").mkdir()
    for source in copy.split()[1:-1]:
        shutil.copy(REPO / source, tmp_path / source)
    text = _message_with_step(EXAMPLE)
    code = (f"import sys; sys.path.insert(0, {str(tmp_path)!r}); from loadme import envelope; "
            f"print(envelope.decode({text!r}, envelope.StepMessage).plan.as_dict())")
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == repr(EXAMPLE)


def test_a_pattern_is_matched_whole_a_trailing_newline_included(settings: Settings) -> None:
    """`$` in Python matches before a final newline (and so does the Python jsonschema here, while
    ECMA's does not): the validator matches the whole value."""
    [image] = [f for f in FIELDS if f.rule.pattern is not None]
    refused = _api_verdict(settings, {**EXAMPLE, image.name: image.rule.example + "\n"})
    assert refused == image.rule.request_error.format(where=f"steps[1].{image.name}")
