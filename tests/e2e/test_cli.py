"""The installed `loadme` console script (.venv/bin/loadme, a subprocess) against the real local stack,
as a user runs it: LOADME_URL points at the module's local host (every message delivered twice)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devhost.azurite import free_port
from loadme.deploy import step_message as deployed_step_message
from loadme.journal import EventType
from loadme.names import INITJOB_QUEUE, poison_queue
from tests.support import Stack, wait_until

pytestmark = pytest.mark.e2e
LOADME = Path(sys.executable).parent / "loadme"


def loadme(stack: Stack, *args: str, url: str | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run the console script; it must never print a traceback, and an error is one line."""
    if not LOADME.exists():
        pytest.fail(f"{LOADME} is missing: `make deps` installs the command line")
    env = {name: value for name, value in os.environ.items() if not name.startswith("LOADME_")}
    env["LOADME_URL"] = url or stack.base_url
    done = subprocess.run([str(LOADME), *args], capture_output=True, text=True, timeout=timeout, env=env)
    assert "Traceback" not in done.stderr, done.stderr
    if done.returncode not in (0, 1):
        assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("loadme: "), done.stderr
    return done


def start(stack: Stack, *args: str) -> str:
    done = loadme(stack, "run", "--json", *args)
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["run_id"])


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_run_wait_exits_0_when_the_run_succeeds_and_1_when_it_fails(stack: Stack) -> None:
    done = loadme(stack, "run", "--var", "___Name=Ada", "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    run_id = lines[0].removeprefix("started run ")
    assert stack.status(run_id)["variables"]["___Message"] == "Hello, Ada!"
    assert "succeeded after" in lines[-1]

    done = loadme(stack, "run", "--var", "___Name=Lin", "--var", "___DemoExitCode=3", "--wait")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "failed" in done.stdout and "step 1 exited 3" in done.stdout
    failed_id = done.stdout.splitlines()[0].removeprefix("started run ")
    assert stack.status(failed_id)["state"] == "failed"
    stack.wait_for_run(failed_id)  # cleaned up: its index row is final and its log archived

    # What failed today, and why: the list, the run, its log.
    listed = as_json(loadme(stack, "runs", "--state", "failed", "--since", "1d", "--json"))
    assert failed_id in [run["run_id"] for run in listed["runs"]]
    assert run_id not in [run["run_id"] for run in listed["runs"]]
    table = loadme(stack, "runs", "--state", "failed", "--since", "1d")
    assert table.returncode == 0 and failed_id in table.stdout and "step 1 exited 3" in table.stdout
    shown = loadme(stack, "show", failed_id)
    assert shown.returncode == 0 and "failed" in shown.stdout and "step 1 exited 3" in shown.stdout
    assert as_json(loadme(stack, "show", failed_id, "--json"))["reason"] == "step 1 exited 3"
    logs = loadme(stack, "logs", failed_id)
    assert logs.returncode == 0 and "demo job: Hello, Lin!" in logs.stdout and "job exited 3" in logs.stdout
    assert as_json(loadme(stack, "logs", failed_id, "--json"))["steps"][0]["source"] == "archive"


def test_steps_run_in_order_and_logs_follow_prints_them_until_the_run_ends(stack: Stack) -> None:
    run_id = start(stack, "--var", "___Name=Bo", "--var", "___DemoSleepSeconds=2",
                   "--step", "python jobs/demo_job.py", "--step", "python -c 'print(\"second step\")'")
    done = loadme(stack, "logs", run_id, "--follow")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.index("==> step 1") < out.index("demo job: Hello, Bo!") < out.index("==> step 2") < \
        out.index("second step")
    assert out.count("demo job: Hello, Bo!") == 1
    status = stack.status(run_id)
    assert (status["state"], status["cleaned_up"]) == ("succeeded", True)  # it returned only after the run ended


def test_cancel_a_running_run_and_not_an_ended_one(stack: Stack) -> None:
    run_id = start(stack, "--var", "___DemoSleepSeconds=120")
    wait_until(lambda: stack.status(run_id)["state"] == "running", 60, "the run to be running")
    done = loadme(stack, "cancel", run_id)
    assert done.returncode == 0 and f"run {run_id} cancelled" in done.stdout, done.stderr
    assert stack.wait_for_run(run_id)["state"] == "cancelled"
    assert as_json(loadme(stack, "cancel", run_id, "--json"))["state"] == "cancelled"  # idempotent

    succeeded = start(stack)
    stack.wait_for_run(succeeded)
    done = loadme(stack, "cancel", succeeded)
    assert done.returncode == 4 and done.stderr.startswith("loadme: 409 ") and "already succeeded" in done.stderr


def test_stats_json(stack: Stack) -> None:
    stack.wait_for_run(start(stack, "--var", "___DemoExitCode=5"))
    stats = as_json(loadme(stack, "stats", "--days", "2", "--json"))
    assert stats["total"] >= 1 and stats["by_state"]["failed"] >= 1 and len(stats["days"]) == 2
    human = loadme(stack, "stats")
    assert human.returncode == 0 and "success rate" in human.stdout


def test_poison_list_requeue_and_drop(stack: Stack) -> None:
    run_id = start(stack)
    stack.wait_for_run(run_id)
    storage = stack.context.storage
    storage.ensure_resources([poison_queue(INITJOB_QUEUE)])
    deploying = stack.context.journal.get(run_id, 1, EventType.DEPLOYING)
    assert deploying is not None  # the message as the run sent it: a forged one would reopen nothing
    storage.queue(poison_queue(INITJOB_QUEUE)).send_message(deployed_step_message(deploying).to_json())
    storage.raw_queue(poison_queue(INITJOB_QUEUE)).send_message("### not base64")

    listed = as_json(loadme(stack, "poison", "list", "initjob", "--json"))
    assert listed["depth"] == 2
    decoded = next(m for m in listed["messages"] if m["run_id"] == run_id)
    junk = next(m for m in listed["messages"] if m["run_id"] is None)
    human = loadme(stack, "poison")
    assert human.returncode == 0 and "initjob-poison: 2 messages" in human.stdout and decoded["id"] in human.stdout
    assert "cannot be decoded" in human.stdout

    done = loadme(stack, "poison", "requeue", "initjob", decoded["id"])
    assert done.returncode == 0 and done.stdout.startswith(f"requeued message {decoded['id']}"), done.stderr
    done = loadme(stack, "poison", "drop", "initjob-poison", junk["id"])
    assert done.returncode == 0 and done.stdout.startswith(f"dropped message {junk['id']}"), done.stderr
    assert as_json(loadme(stack, "poison", "list", "--json"))["queues"][0]["messages"] == []
    assert "requeued" in [e["event"] for e in stack.status(run_id)["events"]]
    done = loadme(stack, "poison", "drop", "initjob", decoded["id"])  # it was requeued, not dropped
    assert done.returncode == 4 and "409" in done.stderr


def test_errors_are_one_line_with_their_exit_status(stack: Stack) -> None:
    done = loadme(stack, "show", "0" * 32)
    assert (done.returncode, done.stderr) == (4, f"loadme: 404 no run with id '{'0' * 32}'\n")
    done = loadme(stack, "run", "--var", "___RunId=x")
    assert done.returncode == 4 and "reserved" in done.stderr
    done = loadme(stack, "runs", "--since", "last tuesday")
    assert done.returncode == 2 and "--since" in done.stderr
    url = f"http://127.0.0.1:{free_port()}/api"
    done = loadme(stack, "runs", url=url)
    assert done.returncode == 3
    assert done.stderr.startswith(f"loadme: cannot reach {url}") and "make dev" in done.stderr
