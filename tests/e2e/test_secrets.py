"""End to end on the local stack: a secret value never comes back through a job's output variables.

A module of its own: the job here does report the secret on `stage2` (where the app refuses it),
and tests/e2e/test_pipeline.py checks that no queue message of its stack ever holds a secret.
"""

from __future__ import annotations

import json

import pytest
import requests

from loadme.names import INITJOB_QUEUE, REMOVEINFRA_QUEUE, STAGE2_QUEUE
from tests.support import OTHER_SECRET_VALUE, SECRET_VALUE, Stack

pytestmark = pytest.mark.e2e

# H2 (security review): a job given a secret copies it into an output variable to read it back.
COPY_SECRET = ["python", "-c", "import os; open(os.environ['LOADME_OUTPUT'], 'a').write("
               "'___Fine=ok\\n___Leak=copy:' + os.environ['___DbPassword'] + '\\n')"]


def _tapped(stack: Stack, queue: str, run_id: str) -> list[str]:
    lines = stack.tap_path.read_text().splitlines() if stack.tap_path.exists() else []
    return [line.split(" ", 1)[1] for line in lines if line.startswith(queue + " ") and run_id in line]


def test_a_secret_copied_into_an_output_variable_is_refused_and_seen_nowhere(stack: Stack) -> None:
    response = stack.post_run({"secrets": ["___DbPassword"], "steps": [
        {"command": COPY_SECRET}, {"command": ["python", "jobs/demo_job.py"]}]})
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]
    status = stack.wait_for_run(run_id)

    assert status["state"] == "failed"
    assert status["reason"].startswith("output variable(s) ___Leak refused: the value contains a secret")
    assert status["current_step"] == 1  # the next step, which would have been given the variable, never ran
    result = next(e for e in status["events"] if e["event"] == "result")
    assert result["refused"] == ["___Leak"] and "___Leak" not in status["variables"]
    assert any(OTHER_SECRET_VALUE in text for text in _tapped(stack, STAGE2_QUEUE, run_id))  # the job did send it

    ctx = stack.context
    logs = requests.get(f"{stack.base_url}/runs/{run_id}/logs", timeout=30)
    logs.raise_for_status()
    places = {
        "GET /api/runs/{id}": json.dumps(status),
        "GET /api/runs/{id}/logs": logs.text,
        "journal rows": json.dumps([dict(r) for r in ctx.storage.table.query_entities(
            "PartitionKey eq @r", parameters={"r": run_id})], default=str),
        "step messages": "\n".join(_tapped(stack, INITJOB_QUEUE, run_id)),
        "removal messages": "\n".join(_tapped(stack, REMOVEINFRA_QUEUE, run_id)),
        "host log": stack.log_text(),
        "log blobs": "".join(ctx.storage.logs.download_blob(name).readall().decode() for name in status["logs"]),
    }
    for place, text in places.items():
        for secret in (OTHER_SECRET_VALUE, SECRET_VALUE):
            assert secret not in text, f"{secret!r} leaked into {place}"
