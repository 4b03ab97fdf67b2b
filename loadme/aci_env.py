"""ACI environment generator: variables and runner controls -> ACI environment variables.

Produces the REST/ARM shape (`{"name", "value"}` or `{"name", "secureValue"}`), which is what the
template spec's array parameter takes and what the SDK model deserializes. Secure values are never
returned by a GET on the container group.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

ACI_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Runner controls: not prefixed, so they never become run variables.
ENV_PREFIX = "LOADME_PREFIX"
ENV_RESULT_URL = "LOADME_RESULT_URL"
ENV_RESULT_SAS = "LOADME_RESULT_SAS"
ENV_RESULT_TOKEN = "LOADME_RESULT_TOKEN"
ENV_RESULT_AUTH = "LOADME_RESULT_AUTH"
ENV_IDENTITY_CLIENT_ID = "LOADME_IDENTITY_CLIENT_ID"
ENV_SECRET_NAMES = "LOADME_SECRET_NAMES"
ENV_OUTPUT_FILE = "LOADME_OUTPUT"


@dataclass(frozen=True)
class RunnerControls:
    """What the runner needs besides the variables to post its result."""

    prefix: str
    result_url: str
    result_auth: str
    token: str
    sas: str = ""
    identity_client_id: str = ""


def aci_environment(
    variables: Mapping[str, str],
    secrets: Mapping[str, str],
    controls: RunnerControls,
) -> list[dict[str, str]]:
    """Build the container's environment variables.

    Plain variables go in `value`; secret variables, the SAS and the result token go in
    `secureValue`. Raises ValueError for a name ACI would refuse.
    """
    env: list[dict[str, str]] = []

    def add(name: str, value: str, secure: bool) -> None:
        if not ACI_ENV_NAME.match(name):
            raise ValueError(f"{name!r} is not a valid ACI environment variable name")
        env.append({"name": name, "secureValue" if secure else "value": value})

    for name in sorted(variables):
        add(name, variables[name], secure=False)
    for name in sorted(secrets):
        add(name, secrets[name], secure=True)
    add(ENV_PREFIX, controls.prefix, secure=False)
    add(ENV_RESULT_URL, controls.result_url, secure=False)
    add(ENV_RESULT_AUTH, controls.result_auth, secure=False)
    add(ENV_SECRET_NAMES, ",".join(sorted(secrets)), secure=False)
    add(ENV_RESULT_TOKEN, controls.token, secure=True)
    if controls.sas:
        add(ENV_RESULT_SAS, controls.sas, secure=True)
    if controls.identity_client_id:
        add(ENV_IDENTITY_CLIENT_ID, controls.identity_client_id, secure=False)
    return env


def as_process_environment(env: list[dict[str, str]]) -> dict[str, str]:
    """The same variables as a process environment (what the container sees)."""
    return {item["name"]: item.get("value", item.get("secureValue", "")) for item in env}
