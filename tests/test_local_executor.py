"""The local executor: a real process per container group, with exactly the ACI environment."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

from loadme import contract
from loadme.context import Context
from loadme.deploy import build_container_spec
from loadme.envelope import StepMessage, StepPlan
from loadme.executors.base import ContainerSpec
from loadme.executors.local import CONTAINER_DIR, RUNNER, LocalExecutor, group_alive
from loadme.names import container_group_name, new_run_id
from loadme.runs import reserved_variables
from loadme.slot import Slot
from tests.support import OTHER_SECRET_VALUE, PROC_PROBE, SECRET_VALUE, unprivileged, wait_until


def _step(ctx: Context, command: tuple[str, ...], secrets: tuple[str, ...] = (), **variables: str) -> StepMessage:
    run_id = new_run_id()
    plan = StepPlan("img:test", command, secrets)
    created, deadline = "2026-01-01T00:00:00+00:00", "2099-01-01T00:00:00+00:00"
    return StepMessage(
        run_id=run_id, step=1, attempt=1, created_at=created, deadline=deadline, steps=(plan,), trigger="http",
        variables={**variables, **reserved_variables(ctx, Slot(run_id, 1), plan, created, deadline, "http")},
    )


def test_runner_gets_exactly_the_aci_environment(context: Context, tmp_path: Path) -> None:
    dump = tmp_path / "env.json"
    msg = _step(context, ("python", "-c", f"import json, os; json.dump(dict(os.environ), open({str(dump)!r}, 'w'))"),
                ("___ApiToken",), ___Color="red")
    spec = build_container_spec(context, msg)
    executor = context.executor
    assert isinstance(executor, LocalExecutor)
    assert executor.deploy(spec) is True
    wait_until(lambda: executor.state(spec.name).state == "terminated", 30, "the container to finish")
    seen = json.loads(dump.read_text())

    aci_env = {e["name"]: e.get("value", e.get("secureValue")) for e in spec.environment}
    image_env = {"PATH", "PYTHONPATH", "PYTHONUNBUFFERED", "LANG"}
    runner_only = set(contract.RUNNER_SECRETS)  # the runner keeps its credentials to itself
    expected = {k: v for k, v in aci_env.items() if k not in runner_only}
    assert {k: v for k, v in seen.items() if k not in image_env | {"LOADME_OUTPUT"}} == expected
    assert seen["___Color"] == "red" and seen["___ApiToken"] == SECRET_VALUE  # the secret the step named
    assert "___DbPassword" not in seen and OTHER_SECRET_VALUE not in json.dumps(seen)  # and only that one
    assert seen["LOADME_SECRET_NAMES"] == "___ApiToken"
    assert executor.state(spec.name).exit_code == 0
    assert "result posted" in executor.logs(spec.name)


def test_deploy_is_idempotent_and_delete_stops_the_process_group(context: Context) -> None:
    msg = _step(context, ("python", "jobs/demo_job.py"), ___DemoSleepSeconds="60")
    spec = build_container_spec(context, msg)
    executor = context.executor
    assert isinstance(executor, LocalExecutor)
    assert executor.deploy(spec) is True
    assert executor.deploy(spec) is False
    wait_until(lambda: executor.state(spec.name).state == "running", 10, "the container to run")
    pid = int((executor.root / spec.name / "pid").read_text())
    assert [g.name for g in executor.list_owned()] == [spec.name]
    assert executor.delete(spec.name) is True
    assert executor.state(spec.name).state == "missing"
    assert executor.delete(spec.name) is False
    # A late redelivery after the removal must not start the group a second time.
    assert executor.deploy(spec) is False and executor.state(spec.name).state == "missing"
    assert (executor.root / "starts.log").read_text().count(spec.name) == 1
    # Dead, not merely signalled; a killed process stays in its group as a zombie until it is reaped.
    assert not group_alive(pid)
    assert executor.logs(spec.name) == ""


def test_killed_runner_is_reported_as_terminated_by_signal(context: Context) -> None:
    msg = _step(context, ("python", "jobs/demo_job.py"), ___DemoSleepSeconds="60")
    spec = build_container_spec(context, msg)
    executor = context.executor
    executor.deploy(spec)
    wait_until(lambda: "starting" in executor.logs(spec.name), 10, "the runner to start")
    runner_pids = [p for p in Path("/proc").iterdir() if p.name.isdigit()
                   and _cmdline(p).split("\0")[1:2] == [str(RUNNER)] and spec.run_id in _environ(p)]
    assert len(runner_pids) == 1
    os.kill(int(runner_pids[0].name), 9)
    status = wait_until(lambda: (s := executor.state(spec.name)).state == "terminated" and s, 10, "exit code")
    assert status.exit_code == 137
    assert container_group_name(msg.run_id, 1) == spec.name


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def _environ(proc: Path) -> str:
    try:
        return (proc / "environ").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def test_a_claimed_group_runs_even_when_whoever_started_it_died_at_once(context: Context) -> None:
    """A host killed while it started a container: the supervisor's answer finds no reader, and the
    container must run all the same (a claimed group is always a started one)."""
    spec = build_container_spec(context, _step(context, ("python", "jobs/demo_job.py")))
    executor = context.executor
    assert isinstance(executor, LocalExecutor)
    executor.root.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(executor.supervisor_command(spec), env=executor.process_environment(spec),
                               cwd=CONTAINER_DIR, start_new_session=True, stdout=subprocess.PIPE)
    assert process.stdout is not None
    process.stdout.close()  # the starter is gone before the supervisor answers
    wait_until(lambda: executor.state(spec.name).state == "terminated", 30, "the container to run to its end")
    assert executor.state(spec.name).exit_code == 0
    process.wait(timeout=30)


class _UnprivilegedExecutor(LocalExecutor):
    """The local executor with its supervisor (and so the runner and the job) stripped of every
    capability: as a same-uid process on a developer's machine, or uid 10001 in the image."""

    def supervisor_command(self, spec: ContainerSpec) -> list[str]:
        return unprivileged(super().supervisor_command(spec))


def test_a_job_on_the_local_executor_reads_no_credentials_from_proc(context: Context, tmp_path: Path) -> None:
    """The supervisor holds the runner's environment too: neither it nor the runner is readable."""
    report = tmp_path / "report.json"
    spec = build_container_spec(context, _step(context, ("python", "-c", PROC_PROBE, str(report))))
    secure = [e["secureValue"] for e in spec.environment if e["name"] in contract.RUNNER_SECRETS and "secureValue" in e]
    assert secure  # the token at least
    spec = replace(spec, command=(*spec.command, *secure))
    executor = _UnprivilegedExecutor(tmp_path / "containers")
    assert executor.deploy(spec) is True
    wait_until(lambda: executor.state(spec.name).state == "terminated", 60, "the container to finish")
    seen = json.loads(report.read_text())
    assert seen["own"] and seen["parent"] == "PermissionError"
    assert seen["found"] == []  # neither the runner nor its supervisor gives them away
