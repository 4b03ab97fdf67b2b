"""Shared fixtures: a real Azurite for the session, contexts on it, and the local host.

Azurite is started once per session (in memory, on free ports) and fails the session loudly if it
cannot start. Each test gets its own journal table, logs container and local executor folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from devhost.azurite import Azurite, free_port, start_azurite
from loadme.context import Context, set_context
from loadme.names import TRIGGER_QUEUES, poison_queue
from loadme.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULT_KEY = "test-result-key-0123456789-abcdefghijklmnop"
SECRET_VALUE = "s3cr3t-value-that-must-never-leak"


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """A real Azurite for the whole session. Fails loudly if it cannot start."""
    log = tmp_path_factory.mktemp("azurite") / "azurite.log"
    server = start_azurite(location=None, log_path=log)
    yield server
    server.stop()


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
        "LOGS_CONTAINER": f"logs-{suffix}",
        "LOCAL_EXECUTOR_DIR": str(executor_dir),
        "SECRET_VARIABLES": json.dumps({"___ApiToken": "TEST_API_TOKEN"}),
        "TEST_API_TOKEN": SECRET_VALUE,
    }
    values.update(overrides)
    return values


@pytest.fixture
def settings_env(azurite: Azurite, tmp_path: Path) -> dict[str, str]:
    """App settings for one test: its own table, logs container and executor folder."""
    return app_settings(azurite.connection_string, tmp_path / "containers")


@pytest.fixture
def context(settings_env: dict[str, str]) -> Iterator[Context]:
    """A Context on Azurite, installed as the process's context (handlers use it)."""
    ctx = Context(Settings.from_mapping(settings_env))
    ctx.storage.ensure_resources(list(TRIGGER_QUEUES))
    set_context(ctx)
    yield ctx
    set_context(None)
    executor = ctx.executor
    for group in executor.list_owned():
        executor.delete(group.name)


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

    def wait_for_run(self, run_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until the run is terminal and cleaned up; returns its status document."""
        def done() -> dict[str, Any] | None:
            status = self.status(run_id)
            return status if status["cleaned_up"] else None

        return dict(wait_until(done, timeout, f"run {run_id} to finish and be cleaned up"))

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


def start_stack(env: dict[str, str], workdir: Path, *extra_args: str) -> Stack:
    """Start `python -m devhost` on an existing Azurite with these app settings."""
    port = free_port()
    settings_file = workdir / "local.settings.json"
    settings_file.write_text(json.dumps({"IsEncrypted": False, "Values": env}))
    log_path, tap_path = workdir / "host.log", workdir / "messages.tap"
    process_env = {k: v for k, v in os.environ.items() if k not in env}
    process_env["PYTHONPATH"] = str(REPO_ROOT)
    argv = [sys.executable, "-m", "devhost", "--no-azurite", "--port", str(port),
            "--settings", str(settings_file), "--message-tap", str(tap_path), *extra_args]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, cwd=REPO_ROOT, env=process_env, stdout=log, stderr=subprocess.STDOUT)
    stack = Stack(f"http://127.0.0.1:{port}/api", env, process, log_path, tap_path,
                  Path(env["LOCAL_EXECUTOR_DIR"]))

    def ready() -> bool:
        if process.poll() is not None:
            pytest.fail(f"local host exited with {process.returncode}:\n{stack.log_text()[-3000:]}")
        return "local host ready" in stack.log_text()

    wait_until(ready, 30, "the local host to start")
    return stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The local host for one test module on its own Azurite, every message delivered twice."""
    workdir = tmp_path_factory.mktemp("stack")
    storage = start_azurite(location=None, log_path=workdir / "azurite.log")
    env = app_settings(storage.connection_string, workdir / "containers")
    running = start_stack(env, workdir, "--duplicate-deliveries")
    yield running
    running.stop()
    storage.stop()


def all_queue_texts(ctx: Context) -> dict[str, list[str]]:
    """The raw text of every message now in the trigger queues and their poison queues."""
    found: dict[str, list[str]] = {}
    for queue in [*TRIGGER_QUEUES, *(poison_queue(q) for q in TRIGGER_QUEUES)]:
        client = ctx.storage.raw_queue(queue)
        found[queue] = [m.content for m in client.peek_messages(max_messages=32)]
    return found
