"""Only allowed images run, and each step's container gets exactly the secrets it named."""

from __future__ import annotations

import json

import pytest

from loadme.context import Context, set_context
from loadme.errors import SettingsError
from loadme.images import ImagePolicy, repository
from loadme.names import INITJOB_QUEUE
from loadme.settings import Settings
from tests.support import post_json, response_json

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(("image", "expected"), [
    ("python:3.13-slim", "docker.io/library/python"),
    ("user/app:1", "docker.io/user/app"),
    ("myacr.azurecr.io/jobs/etl:2", "myacr.azurecr.io/jobs/etl"),
    (f"myacr.azurecr.io/jobs/etl@{DIGEST}", "myacr.azurecr.io/jobs/etl"),
    (f"myacr.azurecr.io/jobs/etl:2@{DIGEST}", "myacr.azurecr.io/jobs/etl"),
    ("localhost:5000/app:dev", "localhost:5000/app"),
    ("MyAcr.AzureCR.io/Jobs/ETL", "myacr.azurecr.io/jobs/etl"),
])
def test_image_references_normalize_to_their_repository(image: str, expected: str) -> None:
    assert repository(image) == expected


def test_entries_allow_a_registry_a_path_or_one_repository() -> None:
    policy = ImagePolicy.from_entries(["myacr.azurecr.io/jobs/", "otheracr.azurecr.io/", "python"])
    for allowed in ("myacr.azurecr.io/jobs/etl:1", f"myacr.azurecr.io/jobs/deep/er@{DIGEST}",
                    "otheracr.azurecr.io/anything:latest", "python:3.13-slim", "docker.io/library/python"):
        assert policy.allows(allowed), allowed
    for refused in ("myacr.azurecr.io/other:1", "myacr.azurecr.io/jobsx/etl", "myacr.azurecr.io.evil.example/jobs/x",
                    "evil.example/otheracr.azurecr.io/x", "pythonx:1", "user/python"):
        assert not policy.allows(refused), refused


def _queued(ctx: Context) -> int:
    return int(ctx.storage.raw_queue(INITJOB_QUEUE).get_queue_properties().approximate_message_count or 0)


def _journal_rows(ctx: Context) -> int:
    return len(list(ctx.storage.table.list_entities()))


@pytest.fixture
def trusted(settings_env: dict[str, str]) -> Context:
    ctx = Context(Settings.from_mapping({**settings_env, "ALLOWED_IMAGES": json.dumps(
        ["loadme-runner", "myacr.azurecr.io/jobs/"])}))
    ctx.storage.ensure_resources([INITJOB_QUEUE])
    ctx.storage.raw_queue(INITJOB_QUEUE).clear_messages()
    set_context(ctx)
    return ctx


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"image": "docker.io/attacker/miner:1"}, 403,
     "image 'docker.io/attacker/miner:1' is not allowed: ALLOWED_IMAGES allows docker.io/library/loadme-runner, "
     "myacr.azurecr.io/jobs/"),
    ({"steps": [{"command": ["a"]}, {"command": ["b"], "image": "myacr.azurecr.io/other:1"}]}, 403,
     "steps[2].image 'myacr.azurecr.io/other:1' is not allowed"),
    ({"secrets": ["___NoSuchSecret"]}, 400,
     "'secrets' names unknown secret(s) ___NoSuchSecret; SECRET_VARIABLES defines ___ApiToken, ___DbPassword"),
    ({"steps": [{"command": ["a"], "secrets": ["___Nope"]}]}, 400,
     "'steps[1].secrets' names unknown secret(s) ___Nope"),
    ({"secrets": "___ApiToken"}, 400, "'secrets' must be an array of secret variable names"),
])
def test_refused_before_anything_is_queued_or_journaled(trusted: Context, body: dict[str, object], status: int,
                                                       message: str) -> None:
    before = _journal_rows(trusted)
    response, initjob = post_json(body)
    assert response.status_code == status
    assert message in response_json(response)["error"]
    assert initjob.get() is None and _queued(trusted) == 0 and _journal_rows(trusted) == before


def test_digests_are_accepted_and_each_step_gets_the_runs_secrets_and_its_own(trusted: Context) -> None:
    response, initjob = post_json({"secrets": ["___ApiToken"], "steps": [
        {"command": ["a"], "image": f"myacr.azurecr.io/jobs/etl@{DIGEST}"},
        {"command": ["b"], "secrets": ["___DbPassword"]}]})
    assert response.status_code == 202, response.get_body()
    plan = json.loads(initjob.get()[0])["steps"]
    assert [step["secrets"] for step in plan] == [["___ApiToken"], ["___ApiToken", "___DbPassword"]]
    run_id = response_json(response)["run_id"]
    from tests.support import http_request, user_function

    status = response_json(user_function("run_status")(http_request("GET", f"runs/{run_id}",
                                                                     route_params={"run_id": run_id})))
    assert status["secrets"] == ["___ApiToken", "___DbPassword"]  # names only
    assert "s3cr3t" not in json.dumps(status)


def test_a_request_that_names_no_secret_gets_none(trusted: Context) -> None:
    response, initjob = post_json({"variables": {}})
    assert response.status_code == 202
    assert json.loads(initjob.get()[0])["steps"][0]["secrets"] == []


def test_default_image_outside_the_allow_list_is_a_settings_error(settings_env: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match="DEFAULT_IMAGE: 'loadme-runner:test' is not allowed by ALLOWED_IMAGES"):
        Settings.from_mapping({**settings_env, "ALLOWED_IMAGES": json.dumps(["myacr.azurecr.io/"])})
    with pytest.raises(SettingsError, match="SCHEDULED_INIT_SECRETS: ___Missing is not one of SECRET_VARIABLES"):
        Settings.from_mapping({**settings_env, "SCHEDULED_INIT_SECRETS": json.dumps(["___Missing"])})


def _bound(settings_env: dict[str, str]) -> dict[str, str]:
    """___DbPassword may go to the ETL repository only; ___ApiToken keeps the old form (any allowed image)."""
    return {**settings_env, "ALLOWED_IMAGES": json.dumps(["loadme-runner", "myacr.azurecr.io/jobs/"]),
            "SECRET_VARIABLES": json.dumps({"___ApiToken": "TEST_API_TOKEN", "___DbPassword": {
                "setting": "TEST_DB_PASSWORD", "images": ["myacr.azurecr.io/jobs/etl"]}})}


@pytest.fixture
def bound(settings_env: dict[str, str]) -> Context:
    ctx = Context(Settings.from_mapping(_bound(settings_env)))
    ctx.storage.ensure_resources([INITJOB_QUEUE])
    ctx.storage.raw_queue(INITJOB_QUEUE).clear_messages()
    set_context(ctx)
    return ctx


@pytest.mark.parametrize(("body", "message"), [
    ({"secrets": ["___DbPassword"]},
     "secret ___DbPassword may not go to image 'loadme-runner:test': SECRET_VARIABLES binds it to "
     "myacr.azurecr.io/jobs/etl (an operator adds the image to its \"images\" there)"),
    ({"secrets": ["___DbPassword"], "steps": [{"command": ["a"], "image": "myacr.azurecr.io/jobs/etl:1"},
                                              {"command": ["b"], "image": "myacr.azurecr.io/jobs/other:1"}]},
     "steps[2]: secret ___DbPassword may not go to image 'myacr.azurecr.io/jobs/other:1': SECRET_VARIABLES"),
    ({"steps": [{"command": ["a"], "secrets": ["___DbPassword"]}]},
     "steps[1]: secret ___DbPassword may not go to image 'loadme-runner:test'"),
])
def test_a_secret_named_for_an_image_it_is_not_bound_to_is_a_403(bound: Context, body: dict[str, object],
                                                                 message: str) -> None:
    before = _journal_rows(bound)
    response, initjob = post_json(body)
    assert response.status_code == 403
    assert message in response_json(response)["error"]
    assert initjob.get() is None and _queued(bound) == 0 and _journal_rows(bound) == before


def test_bound_secrets_go_to_their_images_and_old_form_ones_anywhere_allowed(bound: Context) -> None:
    response, initjob = post_json({"secrets": ["___ApiToken"], "steps": [
        {"command": ["a"], "image": f"myacr.azurecr.io/jobs/etl@{DIGEST}", "secrets": ["___DbPassword"]},
        {"command": ["b"]}]})
    assert response.status_code == 202, response.get_body()
    plan = json.loads(initjob.get()[0])["steps"]
    assert [step["secrets"] for step in plan] == [["___ApiToken", "___DbPassword"], ["___ApiToken"]]


def test_a_binding_changed_after_the_request_is_checked_again_at_deploy(trusted: Context,
                                                                        settings_env: dict[str, str]) -> None:
    from tests.support import Out, http_request, queue_message, user_function

    response, initjob = post_json({"secrets": ["___DbPassword"]})  # unbound when requested
    assert response.status_code == 202
    run_id = response_json(response)["run_id"]
    ctx = Context(Settings.from_mapping(_bound(settings_env)))
    set_context(ctx)
    user_function("dq_init_job")(queue_message(initjob.get()[0]), removeinfra=Out())
    assert ctx.executor.list_owned() == []
    status = response_json(user_function("run_status")(http_request("GET", f"runs/{run_id}",
                                                                     route_params={"run_id": run_id})))
    assert status["state"] == "failed"
    assert status["reason"] == ("cannot deploy step 1: secret ___DbPassword may not go to image 'loadme-runner:test': "
                                "SECRET_VARIABLES binds it to myacr.azurecr.io/jobs/etl (an operator adds the image "
                                "to its \"images\" there)")
