"""Pure builders: names, result tokens, the ACI environment."""

from __future__ import annotations

import re

import pytest

from loadme.container_env import RunnerControls, as_process_environment, container_environment
from loadme.names import container_group_name, is_run_id, new_run_id, run_id_for_idempotency_key
from loadme.slot import Slot
from loadme.tokens import result_token, verify_result_token

ACI_NAME = re.compile(r"^(?!-)(?!.*--)[a-z0-9-]{1,63}(?<!-)$")


def test_container_group_names_are_valid_for_aci() -> None:
    for step in (1, 9, 999):
        name = container_group_name(new_run_id(), step)
        assert ACI_NAME.match(name), name


@pytest.mark.parametrize(("run_id", "step"), [("UPPER" * 6 + "ab", 1), ("a" * 32, 0), ("a" * 32, 1000)])
def test_container_group_name_refuses_bad_input(run_id: str, step: int) -> None:
    with pytest.raises(ValueError):
        container_group_name(run_id, step)


def test_idempotency_keys_map_to_stable_run_ids() -> None:
    first = run_id_for_idempotency_key("order-42")
    assert first == run_id_for_idempotency_key("order-42") != run_id_for_idempotency_key("order-43")
    assert is_run_id(first)


def test_result_token_binds_run_and_step() -> None:
    key = b"k" * 32
    token = result_token(key, Slot("r" * 32, 1))
    assert verify_result_token(key, Slot("r" * 32, 1), token)
    assert not verify_result_token(key, Slot("r" * 32, 2), token)
    assert not verify_result_token(key, Slot("s" * 32, 1), token)
    assert not verify_result_token(b"x" * 32, Slot("r" * 32, 1), token)


def test_container_environment_puts_secrets_in_secure_values_only() -> None:
    controls = RunnerControls(prefix="___", result_url="http://q/stage2/messages", result_auth="sas",
                              token="tok", log_url="http://b/logs/r/step-001.log", sas="sv=1&sig=abc",
                              log_sas="sv=1&sig=def")
    env = container_environment({"___B": "2", "___A": "1"}, {"___ApiToken": "hunter2"}, controls)
    assert env == [
        {"name": "___A", "value": "1"},
        {"name": "___B", "value": "2"},
        {"name": "___ApiToken", "secureValue": "hunter2"},
        {"name": "LOADME_PREFIX", "value": "___"},
        {"name": "LOADME_RESULT_URL", "value": "http://q/stage2/messages"},
        {"name": "LOADME_RESULT_AUTH", "value": "sas"},
        {"name": "LOADME_LOG_URL", "value": "http://b/logs/r/step-001.log"},
        {"name": "LOADME_SECRET_NAMES", "value": "___ApiToken"},
        {"name": "LOADME_RESULT_TOKEN", "secureValue": "tok"},
        {"name": "LOADME_RESULT_SAS", "secureValue": "sv=1&sig=abc"},
        {"name": "LOADME_LOG_SAS", "secureValue": "sv=1&sig=def"},
    ]
    assert as_process_environment(env)["___ApiToken"] == "hunter2"


def test_container_environment_refuses_names_aci_would_refuse() -> None:
    controls = RunnerControls("___", "u", "sas", "t", "l")
    with pytest.raises(ValueError, match="not a valid ACI environment variable name"):
        container_environment({"bad-name": "x"}, {}, controls)
