"""Everything tests share: settings for the local stack, waiting, a clock, message builders,
calling the app's functions as the worker does, ACI specs, and the local host as a subprocess.
Fixtures live in conftest.py and build on these."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import azure.functions as func
import pytest
import requests
from azure_functions_runtime.bindings.meta import from_incoming_proto, load_binding_registry
from azure_functions_runtime.bindings.out import Out

from devhost import bindings
from devhost.http_front import IncomingRequest
from loadme.container_env import RunnerControls, container_environment
from loadme.context import Context
from loadme.envelope import ResultMessage, StepMessage, StepPlan, decode
from loadme.executors.base import ContainerSpec
from loadme.names import INITJOB_QUEUE, STAGE2_QUEUE, TRIGGER_QUEUES, new_run_id, poison_queue
from loadme.settings import AciSettings, Settings
from loadme.slot import Slot
from loadme.tokens import result_token

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULT_KEY = "test-result-key-0123456789-abcdefghijklmnop"
SECRET_VALUE = "s3cr3t-value-that-must-never-leak"
OTHER_SECRET_VALUE = "an0ther-s3cret-only-for-steps-that-ask"
IDENTITY = ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/mgmt/providers/"
            "Microsoft.ManagedIdentity/userAssignedIdentities/loadme-containers")


def app_settings(connection_string: str, executor_dir: Path, **overrides: str) -> dict[str, str]:
    """A complete, valid set of app settings for the local stack."""
    suffix = uuid.uuid4().hex[:10]
    values = {
        "AzureWebJobsStorage": connection_string,
        "EXECUTOR": "local",
        "RESULT_KEY": RESULT_KEY,
        "DEFAULT_IMAGE": "loadme-runner:test",
        "DEFAULT_COMMAND": json.dumps(["python", "jobs/demo_job.py"]),
        "DEFAULT_VARIABLES": json.dumps({"___Greeting": "Hello"}),
        "RUN_TIMEOUT_SECONDS": "300",
        "JOURNAL_TABLE": f"runs{suffix}",
        "ADMISSION_TABLE": f"admission{suffix}",  # capacity in use and the waiting line, not shared with other tests
        "LOGS_CONTAINER": f"logs-{suffix}",
        "LOCAL_EXECUTOR_DIR": str(executor_dir),
        "SECRET_VARIABLES": json.dumps({"___ApiToken": "TEST_API_TOKEN", "___DbPassword": "TEST_DB_PASSWORD"}),
        "TEST_API_TOKEN": SECRET_VALUE,
        "TEST_DB_PASSWORD": OTHER_SECRET_VALUE,
    }
    values.update(overrides)
    return values


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll `predicate` until it returns something truthy. Fails the test after `timeout`."""
    give_up = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > give_up:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Stack:
    """A running local host (a subprocess) on Azurite, and how to reach it."""

    base_url: str
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log_path: Path
    tap_path: Path
    executor_dir: Path

    @property
    def context(self) -> Context:
        return Context(Settings.from_mapping(self.env))

    def post_run(self, body: Any, headers: dict[str, str] | None = None) -> requests.Response:
        return requests.post(f"{self.base_url}/init_job", json=body, headers=headers, timeout=30)

    def status(self, run_id: str) -> dict[str, Any]:
        response = requests.get(f"{self.base_url}/runs/{run_id}", timeout=30)
        response.raise_for_status()
        return dict(response.json())

    def wait_for_run(self, run_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """Wait until the run is terminal and cleaned up; returns its status document."""
        last: dict[str, Any] = {}

        def done() -> dict[str, Any] | None:
            last.update(self.status(run_id))
            return last if last["cleaned_up"] else None

        try:
            return dict(wait_until(done, timeout, f"run {run_id} to finish and be cleaned up"))
        except BaseException:  # say where the run stood, and what the host said about it
            timeline = [(e["step"], e["event"], e.get("state", ""), e.get("reason", ""))
                        for e in last.get("events", [])]
            mentions = [line for line in self.log_text().splitlines() if run_id in line][-15:]
            print(f"run {run_id}: {last.get('state')}; timeline {timeline}\nhost log:\n" + "\n".join(mentions))
            raise

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def starts(self) -> list[str]:
        """Container group names in the local executor's start ledger, one per real start."""
        ledger = self.executor_dir / "starts.log"
        return [line.split()[0] for line in ledger.read_text().splitlines()] if ledger.exists() else []

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# What `python -m devhost` prints once it serves, with the port it was given (devhost/__main__.py).
_HOST_READY = re.compile(r"^local host ready on (http://127\.0\.0\.1:\d+/api)$", re.MULTILINE)


def start_stack(env: dict[str, str], workdir: Path, *extra_args: str) -> Stack:
    """Start `python -m devhost` on an existing Azurite with these app settings, on a port the kernel
    picks (read back from its log: a port picked here could be handed to a parallel worker too)."""
    settings_file = workdir / "local.settings.json"
    settings_file.write_text(json.dumps({"IsEncrypted": False, "Values": env}))
    log_path, tap_path = workdir / "host.log", workdir / "messages.tap"
    process_env = {k: v for k, v in os.environ.items() if k not in env}
    process_env["PYTHONPATH"] = str(REPO_ROOT)
    argv = [sys.executable, "-m", "devhost", "--no-azurite", "--port", "0",
            "--settings", str(settings_file), "--message-tap", str(tap_path), *extra_args]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, cwd=REPO_ROOT, env=process_env, stdout=log, stderr=subprocess.STDOUT)
    stack = Stack("", env, process, log_path, tap_path, Path(env["LOCAL_EXECUTOR_DIR"]))

    def ready() -> str | None:
        if process.poll() is not None:
            pytest.fail(f"local host exited with {process.returncode}:\n{stack.log_text()[-3000:]}")
        match = _HOST_READY.search(stack.log_text())
        return match.group(1) if match else None

    stack.base_url = str(wait_until(ready, 120, "the local host to start"))
    return stack


def all_queue_texts(ctx: Context) -> dict[str, list[str]]:
    """The raw text of every message now in the trigger queues and their poison queues."""
    found: dict[str, list[str]] = {}
    for queue in [*TRIGGER_QUEUES, *(poison_queue(q) for q in TRIGGER_QUEUES)]:
        client = ctx.storage.raw_queue(queue)
        found[queue] = [m.content for m in client.peek_messages(max_messages=32)]
    return found


class Clock:
    """An injectable clock that tests move by hand: fixed at `start`, or with `real=True` the real time
    plus whatever the test added (for tests that also run real processes and real storage)."""

    def __init__(self, start: datetime | None = None, real: bool = False) -> None:
        self._start = start or datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
        self._real = real
        self._offset = timedelta()

    def __call__(self) -> datetime:
        return (datetime.now(UTC) if self._real else self._start) + self._offset

    @property
    def now(self) -> datetime:
        return self()

    def advance(self, seconds: float) -> None:
        self._offset += timedelta(seconds=seconds)


# ---- messages ------------------------------------------------------------------------------------
def step_message(run_id: str = "a" * 32, variables: dict[str, str] | None = None,
                 steps: tuple[StepPlan, ...] = (StepPlan("img:1", ("python", "job.py")),), step: int = 1,
                 created_at: str = "2026-01-01T00:00:00+00:00", deadline: str = "2026-01-01T01:00:00+00:00",
                 trigger: str = "http") -> StepMessage:
    """An `initjob` message with test defaults."""
    return StepMessage(run_id, step, attempt=1, created_at=created_at, deadline=deadline, trigger=trigger,
                       variables=variables if variables is not None else {"___A": "1"}, steps=steps)


def result_message(step: StepMessage, exit_code: int = 0, variables: dict[str, str] | None = None,
                   log_tail: str = "done", log_uploaded: bool = True, token: str | None = None) -> ResultMessage:
    """The result the container's runner would post for `step` (its token computed as the app does)."""
    return ResultMessage(
        step.run_id, step.step, token=token if token is not None else result_token(RESULT_KEY.encode(), Slot.of(step)),
        exit_code=exit_code, variables=variables if variables is not None else dict(step.variables),
        log_tail=log_tail, finished_at=step.created_at, log_uploaded=log_uploaded)


def receive_result(ctx: Context, run_id: str) -> str:
    """Wait for the runner's post for `run_id` on the real stage2 queue; returns the decoded body.

    The queue is the session's: results other tests' containers posted and nobody took are dropped.
    """
    queue = ctx.storage.queue(STAGE2_QUEUE)

    def take() -> str | None:
        for message in queue.receive_messages(max_messages=32, visibility_timeout=5):
            queue.delete_message(message)
            if run_id in str(message.content):
                return str(message.content)
        return None

    return str(wait_until(take, 60, f"the runner's result for {run_id} on stage2"))


def next_initjob(ctx: Context, run_id: str) -> StepMessage:
    """The run's step message once it is visible again on the real initjob queue (it waited
    invisible for capacity); taken off the queue."""
    queue = ctx.storage.queue(INITJOB_QUEUE)

    def take() -> StepMessage | None:
        for message in queue.receive_messages(max_messages=32, visibility_timeout=5):
            if run_id in str(message.content):
                queue.delete_message(message)
                return decode(str(message.content), StepMessage)
        return None

    return wait_until(take, 90, f"the waiting step of {run_id} back on initjob")  # type: ignore[no-any-return]


# ---- the app's functions, called as the worker calls them ----------------------------------------
@functools.cache
def indexed_functions() -> dict[str, Any]:
    # get_functions() indexes the app and may run only once per FunctionApp.
    import function_app

    load_binding_registry()
    return {f.get_function_name(): f for f in function_app.app.get_functions()}


def user_function(name: str) -> Any:
    """The user code of function `name`, from the app's own registry."""
    return indexed_functions()[name].get_user_function()


def _convert(binding: str, trigger: bindings.TriggerInput, pytype: type) -> Any:
    indexed_functions()
    return from_incoming_proto(binding, trigger.input_data[0], pytype=pytype,
                               trigger_metadata=trigger.trigger_metadata, function_name="test")


def http_request(method: str, route: str, body: bytes = b"", headers: dict[str, str] | None = None,
                 route_params: dict[str, str] | None = None, params: dict[str, str] | None = None) -> func.HttpRequest:
    """An HttpRequest as the worker builds it from the host's RpcHttp."""
    incoming = IncomingRequest(method=method, url=f"http://127.0.0.1:7071/api/{route}", headers=headers or {},
                               query=params or {}, route_params=route_params or {}, body=body)
    return _convert("httpTrigger", bindings.http_trigger("req", incoming), func.HttpRequest)  # type: ignore[no-any-return]


def post_json(body: Any, headers: dict[str, str] | None = None) -> tuple[func.HttpResponse, Out]:
    """POST /api/init_job with a JSON body; returns the response and the initjob output."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    out = Out()
    request = http_request("POST", "init_job", data, {"Content-Type": "application/json", **(headers or {})})
    return user_function("init_job")(request, initjob=out), out


def queue_message(body: str | bytes, dequeue_count: int = 1, message_id: str = "m1") -> func.QueueMessage:
    """A QueueMessage as the worker builds it from the host's trigger data and metadata."""
    now = datetime.now(UTC)
    message = SimpleNamespace(id=message_id, dequeue_count=dequeue_count, pop_receipt="receipt",
                              inserted_on=now, expires_on=now + timedelta(days=7), next_visible_on=now)
    data = body.encode() if isinstance(body, str) else body
    return _convert("queueTrigger", bindings.queue_trigger("msg", message, data), func.QueueMessage)  # type: ignore[no-any-return]


def response_json(response: func.HttpResponse) -> Any:
    assert response.mimetype == "application/json"
    return json.loads(response.get_body())


# ---- ACI -------------------------------------------------------------------------------------------
def sample_aci_settings(registry_auth: str = "identity") -> AciSettings:
    """ACI settings of a test deployment."""
    return AciSettings(
        subscription_id="00000000-0000-0000-0000-000000000000", resource_group="loadme-runs",
        location="westeurope", deploy_mode="templatespec", template_spec_version_id="/ts/v1",
        identity_id=IDENTITY, registry_server="loadmeacr.azurecr.io", registry_auth=registry_auth,
        registry_resource_id="/acr" if registry_auth == "admin" else "", identity_client_id="",
        cpu=1.0, memory_gb=1.5,
    )


def sample_container_spec(image: str = "loadmeacr.azurecr.io/loadme-runner:1") -> ContainerSpec:
    """A container spec for a fresh run, with a secret and the runner's controls."""
    run_id = new_run_id()
    env = container_environment({"___RunId": run_id, "___Name": "Ada"}, {"___ApiToken": "hunter2"},
                                RunnerControls("___", "https://acct.queue.core.windows.net/stage2/messages", "sas",
                                               "token-value", "https://acct.blob.core.windows.net/logs/r/step-001.log",
                                               "sv=2021&sig=x"))
    return ContainerSpec(slot=Slot(run_id, 1),
                         deadline="2026-11-25T03:00:00+00:00", image=image, command=("python", "jobs/demo_job.py"),
                         environment=tuple(env))


# A job that walks /proc: writes {found: pids whose environ holds any of argv[2:], readable, parent:
# what reading its parent's environ gave, own: its own environ was readable} to the file argv[1].
PROC_PROBE = """
import json, os, sys
found, readable, parent = [], 0, "unread"
for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            environ = handle.read()
    except OSError as exc:
        if int(pid) == os.getppid():
            parent = type(exc).__name__
        continue
    readable += 1
    if int(pid) == os.getppid():
        parent = "read"
    found += [pid for value in sys.argv[2:] if value.encode() in environ]
own = open("/proc/self/environ", "rb").read()
with open(sys.argv[1], "w") as report:
    json.dump({"found": found, "readable": readable, "parent": parent, "own": b"LOADME_OUTPUT=" in own}, report)
"""


def unprivileged(argv: list[str]) -> list[str]:
    """`argv` as a process that has no privilege over others of its uid. Run as root, it keeps uid 0
    (the venv's python is not reachable for other uids here) but loses every capability for good
    (CAP_SYS_PTRACE and CAP_DAC_* among them): the kernel then treats it as any same-uid process."""
    if os.geteuid() != 0:
        return argv
    setpriv = shutil.which("setpriv")
    assert setpriv is not None, "running as root: setpriv (util-linux) is needed to drop the capabilities"
    return [setpriv, "--bounding-set=-all", "--inh-caps=-all",
            "--securebits=+noroot,+noroot_locked,+no_setuid_fixup,+no_setuid_fixup_locked", *argv]
