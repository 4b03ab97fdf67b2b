"""The OpenAPI document: valid OpenAPI 3.1, covering exactly the app's HTTP functions, and the
functions' real responses validate against it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from loadme.context import Context
from tests.support import Out, http_request, indexed_functions, post_json, response_json, user_function


def _document() -> dict[str, Any]:
    response = user_function("openapi")(http_request("GET", "openapi.json"))
    assert response.status_code == 200
    return dict(response_json(response))


def _check(document: dict[str, Any], schema: str, instance: Any) -> None:
    validator = Draft202012Validator({"$ref": f"#/components/schemas/{schema}", **document})
    errors = [e.message for e in validator.iter_errors(instance)]
    assert errors == [], errors


def test_document_is_valid_openapi() -> None:
    validate(_document())


def test_document_covers_exactly_the_http_functions() -> None:
    routes = set()
    for function in indexed_functions().values():
        for raw in function.get_raw_bindings():
            binding = json.loads(raw)
            if binding["type"] == "httpTrigger":
                route = binding["route"].replace("{*", "{")  # a catch-all is an ordinary path parameter here
                routes |= {(f"/{route}", m.lower()) for m in binding["methods"]}
    documented = {(path, method) for path, item in _document()["paths"].items()
                  for method in item if method != "parameters"}
    assert documented == routes


def test_real_responses_match_the_document(context: Context) -> None:
    document = _document()
    started, _ = post_json({"variables": {"___Name": "Doc"}})
    assert started.status_code == 202
    _check(document, "Started", response_json(started))
    run_id = response_json(started)["run_id"]
    status = user_function("run_status")(http_request("GET", f"runs/{run_id}", route_params={"run_id": run_id}))
    _check(document, "RunStatus", response_json(status))
    cancelled = user_function("cancel_run")(
        http_request("DELETE", f"runs/{run_id}", route_params={"run_id": run_id}), removeinfra=Out())
    assert cancelled.status_code == 202
    _check(document, "Cancelled", response_json(cancelled))
    _check(document, "ServiceStatus", response_json(user_function("service_status")(http_request("GET", "status"))))
    bad, _ = post_json(b"{")
    _check(document, "Error", response_json(bad))
    for code in ("202", "400", "413", "415", "422"):
        assert code in document["paths"]["/init_job"]["post"]["responses"]


def test_the_403_for_a_secret_bound_to_other_images_is_documented(settings_env: dict[str, str]) -> None:
    from loadme.context import set_context
    from loadme.settings import Settings

    secrets = {"___ApiToken": {"setting": "TEST_API_TOKEN", "images": ["myacr.azurecr.io/jobs/etl"]}}
    set_context(Context(Settings.from_mapping({**settings_env, "SECRET_VARIABLES": json.dumps(secrets),
                                               "ALLOWED_IMAGES": json.dumps(["loadme-runner", "myacr.azurecr.io/"])})))
    try:
        refused, initjob = post_json({"secrets": ["___ApiToken"]})
    finally:
        set_context(None)
    assert refused.status_code == 403 and initjob.get() is None
    document = _document()
    _check(document, "Error", response_json(refused))
    assert "SECRET_VARIABLES" in document["paths"]["/init_job"]["post"]["responses"]["403"]["description"]


@pytest.mark.parametrize("body", [
    {"variables": {"___A": "1"}, "steps": [{"command": ["a"], "image": "loadme-runner:2"}], "timeout_seconds": 5,
     "secrets": ["___ApiToken"]},
    {"command": ["python", "job.py"]},
])
def test_documented_request_schema_accepts_what_the_api_accepts(context: Context, body: dict[str, Any]) -> None:
    _check(_document(), "StartRequest", body)
    response, _ = post_json(body)
    assert response.status_code == 202


@pytest.mark.parametrize("body", [{"variables": {"bad": "1"}}, {"extra": 1}, {"timeout_seconds": 0}])
def test_documented_request_schema_rejects_what_the_api_rejects(context: Context, body: dict[str, Any]) -> None:
    validator = Draft202012Validator({"$ref": "#/components/schemas/StartRequest", **_document()})
    assert list(validator.iter_errors(body))
    response, _ = post_json(body)
    assert response.status_code == 400
