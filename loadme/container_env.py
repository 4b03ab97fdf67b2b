"""A step container's environment: its variables, its secrets and the runner's controls.

Both executors use it: ACI takes the list as is (the REST/ARM shape `{"name", "value"}` or
`{"name", "secureValue"}`, what the template spec's array parameter takes); the local executor
turns it into a process environment. Secure values are never returned by a GET on the group.
Names follow loadme.contract.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from loadme import contract

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # what ACI accepts as an environment variable name


@dataclass(frozen=True)
class RunnerControls:
    """What the runner needs besides the variables: where and how to post its result and log."""

    prefix: str
    result_url: str
    result_auth: str
    token: str
    log_url: str
    sas: str = ""
    log_sas: str = ""
    identity_client_id: str = ""


def container_environment(
    variables: Mapping[str, str],
    secrets: Mapping[str, str],
    controls: RunnerControls,
) -> list[dict[str, str]]:
    """The container's environment variables.

    Plain variables go in `value`; secret variables, the SASes and the result token go in
    `secureValue`. Raises ValueError for a name ACI would refuse.
    """
    env: list[dict[str, str]] = []

    def add(name: str, value: str, secure: bool) -> None:
        if not ENV_NAME.match(name):
            raise ValueError(f"{name!r} is not a valid ACI environment variable name")
        env.append({"name": name, "secureValue" if secure else "value": value})

    for name in sorted(variables):
        add(name, variables[name], secure=False)
    for name in sorted(secrets):
        add(name, secrets[name], secure=True)
    add(contract.PREFIX, controls.prefix, secure=False)
    add(contract.RESULT_URL, controls.result_url, secure=False)
    add(contract.RESULT_AUTH, controls.result_auth, secure=False)
    add(contract.LOG_URL, controls.log_url, secure=False)
    add(contract.SECRET_NAMES, ",".join(sorted(secrets)), secure=False)
    add(contract.RESULT_TOKEN, controls.token, secure=True)
    if controls.sas:
        add(contract.RESULT_SAS, controls.sas, secure=True)
    if controls.log_sas:
        add(contract.LOG_SAS, controls.log_sas, secure=True)
    if controls.identity_client_id:
        add(contract.IDENTITY_CLIENT_ID, controls.identity_client_id, secure=False)
    return env


def as_process_environment(env: list[dict[str, str]]) -> dict[str, str]:
    """The same variables as a process environment (what the container sees)."""
    return {item["name"]: item.get("value", item.get("secureValue", "")) for item in env}
