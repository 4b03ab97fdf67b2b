"""The `local` executor: each container group is a process group on this machine.

The process runs the container's own runner (`container/runner.py`) from the `container/`
folder, the image's working directory, with exactly the environment the ACI env generator built,
plus PATH and PYTHONPATH, which the image sets itself. Each group has a folder under `root`:
`spec.json` (no environment values), `pid`, `output.log` and, once the process ends, `exit_code`.

Run as `python -m loadme.executors.local ROOT SPEC_JSON -- ARGV...` it is the supervisor, a
process group of its own that outlives whoever started it (as an ACI container outlives the app
that created it). The supervisor itself claims the group (an atomic marker in `.claims` that
outlives the group, so `deploy` is idempotent even after a delete), creates its folder, records
spec, pid and a line in the starts ledger, tells `deploy` `started` or `exists`, then runs the
runner and records its exit code. Claim and start happen in one process, so a claimed group is
always a started one, even when the caller dies in between.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from loadme import contract
from loadme.container_env import as_process_environment
from loadme.errors import TransientError
from loadme.executors.base import ContainerSpec, ContainerStatus, DeploymentFailure, OwnedGroup
from loadme.slot import Slot

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTAINER_DIR = REPO_ROOT / "container"
RUNNER = CONTAINER_DIR / "runner.py"
STOP_GRACE_SECONDS = 5.0
STARTS_LEDGER = "starts.log"
STARTED, EXISTS = "started", "exists"
CLAIMS = ".claims"


class LocalExecutor:
    """Runs container groups as local process groups (see module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def _folder(self, name: str) -> Path:
        return self.root / name

    def process_environment(self, spec: ContainerSpec) -> dict[str, str]:
        """The environment the runner process gets: the ACI env plus what the image sets."""
        env = as_process_environment(list(spec.environment))
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.defpath])
        env["PYTHONPATH"] = str(REPO_ROOT)
        env["PYTHONUNBUFFERED"] = "1"
        env["LANG"] = "C.UTF-8"  # as the python:3.13-slim base image sets it
        return env

    def supervisor_command(self, spec: ContainerSpec) -> list[str]:
        """The command line of the supervisor that claims and runs `spec`'s group (see module doc)."""
        record = {
            "name": spec.name, "run_id": spec.run_id, "step": spec.step,
            "deadline": spec.deadline, "image": spec.image, "command": list(spec.command),
        }
        return [sys.executable, "-m", "loadme.executors.local", str(self.root), json.dumps(record), "--",
                sys.executable, str(RUNNER), *spec.command]

    def deploy(self, spec: ContainerSpec) -> bool:
        """Start the runner for `spec`; False if this group was already started.

        Raises TransientError when the supervisor could not start (the host retries).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        process = subprocess.Popen(
            self.supervisor_command(spec), env=self.process_environment(spec), cwd=CONTAINER_DIR,
            start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        assert process.stdout is not None
        with process.stdout:
            answer = process.stdout.readline().decode().strip()
        # Reap the supervisor when it exits so it never lingers as a zombie of this process.
        threading.Thread(target=process.wait, daemon=True).start()
        if answer == EXISTS:
            return False
        if answer != STARTED:
            raise TransientError(f"local container {spec.name}: the supervisor exited before starting it")
        logger.info("started local container %s (pid %d)", spec.name, process.pid,
                    extra={"run_id": spec.run_id, "step": spec.step})
        return True

    def state(self, name: str) -> ContainerStatus:
        """running, terminated (with exit code), failed (died without one) or missing."""
        folder = self._folder(name)
        if not folder.is_dir():
            return ContainerStatus("missing")
        exit_file = folder / "exit_code"
        if exit_file.exists():
            return _terminated(exit_file)
        pid = _read_pid(folder)
        if pid is None:
            return ContainerStatus("pending")
        if process_alive(pid):
            return ContainerStatus("running")
        if exit_file.exists():  # it ended between the two checks
            return _terminated(exit_file)
        return ContainerStatus("failed", None, "process ended without an exit code",
                               _mtime(folder / "output.log") or _mtime(folder / "pid"))

    def logs(self, name: str, tail: int | None = None) -> str:
        """The container's combined output (last `tail` lines); empty if gone."""
        log = self._folder(name) / "output.log"
        try:
            text = log.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        if tail is not None:
            text = "\n".join(text.splitlines()[-tail:])
        return text

    def delete(self, name: str) -> bool:
        """Stop the process group if it still runs and remove its folder; False if already gone."""
        folder = self._folder(name)
        if not folder.is_dir():
            return False
        pid = _read_pid(folder)
        if pid is not None:
            _stop_group(pid)
        shutil.rmtree(folder, onexc=_unless_already_gone)
        return True

    def delete_deployment(self, name: str) -> bool:
        """Always False: the local executor keeps no deployment history."""
        return False

    def stop_all(self) -> int:
        """Stop every running group's processes (folders stay, for the janitor); returns how many."""
        stopped = 0
        for group in self.list_owned():
            pid = _read_pid(self._folder(group.name))
            if pid is not None and group_alive(pid):
                _stop_group(pid)
                stopped += 1
        return stopped

    def list_owned(self) -> list[OwnedGroup]:
        """Every group folder that still exists."""
        owned: list[OwnedGroup] = []
        if not self.root.is_dir():
            return owned
        for folder in sorted(self.root.iterdir()):
            if not folder.is_dir():
                continue
            try:
                record = json.loads((folder / "spec.json").read_text())
            except (FileNotFoundError, ValueError):
                continue  # a claim still being written, or not ours
            # The folder, its claim and the record are all named after the slot's group: the name says which.
            slot = Slot.from_group_name(str(record.get("name", "")))
            if slot is None:
                continue
            owned.append(OwnedGroup(record["name"], slot, record["deadline"]))
        return owned

    def failed_deployment(self, name: str) -> DeploymentFailure | None:
        """Always None: `deploy` starts the group itself and reports a failure to start at once."""
        return None


def _unless_already_gone(function: object, path: str, error: BaseException) -> None:
    """rmtree's error handler: a file a concurrent delete of the same group removed first is fine
    (at-least-once delivery runs two removals at once); anything else is raised."""
    if not isinstance(error, FileNotFoundError):
        raise error


def _terminated(exit_file: Path) -> ContainerStatus:
    return ContainerStatus("terminated", int(exit_file.read_text()), "", _mtime(exit_file))


def _mtime(path: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except FileNotFoundError:
        return None


def _read_pid(folder: Path) -> int | None:
    try:
        return int((folder / "pid").read_text())
    except (FileNotFoundError, ValueError):
        return None


def process_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _stop_group(pid: int) -> None:
    """SIGTERM the process group, then SIGKILL what is left after a grace period."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while time.monotonic() < deadline:
            if not group_alive(pid):
                return
            time.sleep(0.05)


def group_alive(pgid: int) -> bool:
    """True while a process of group `pgid` runs (zombies, dead but not yet reaped, do not count)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _claim(root: Path, record: dict[str, object]) -> Path | None:
    """Claim the group and record this supervisor in its folder; None if it was claimed before.

    The claim is a marker in `root/.claims` that deleting the group leaves in place (as a run's
    record outlives its container), so a late redelivery can never start the same group twice.
    """
    claims = root / CLAIMS
    claims.mkdir(exist_ok=True)
    try:
        os.close(os.open(claims / str(record["name"]), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return None
    folder = root / str(record["name"])
    folder.mkdir()
    for name, text in (("spec.json", json.dumps(record)), ("pid", str(os.getpid()))):
        tmp = folder / f"{name}.tmp"
        tmp.write_text(text)
        tmp.replace(folder / name)
    with open(root / STARTS_LEDGER, "a") as ledger:  # append-only: one line per real start
        ledger.write(f"{record['name']} {os.getpid()}\n")
    return folder


def _supervise(folder: Path, argv: list[str]) -> int:
    """Run `argv` with output to `folder/output.log`; record its exit code atomically."""
    with open(folder / "output.log", "ab") as log:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        code = child.wait()
    if code < 0:  # killed by a signal: report it the way a container runtime does
        code = 128 - code
    tmp = folder / "exit_code.tmp"
    tmp.write_text(str(code))
    tmp.replace(folder / "exit_code")
    return code


def _main(argv: list[str]) -> int:
    contract.protect_process()  # its environment holds the runner's credentials: closed to the job too
    root, record, _separator, *command = argv
    folder = _claim(Path(root), json.loads(record))
    # The caller may have died since it started us (a killed host): the claim stands and the container
    # must run all the same, so an answer nobody reads is not an error.
    with contextlib.suppress(BrokenPipeError):
        print(STARTED if folder else EXISTS, flush=True)
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the caller stops reading here
    if folder is None:
        return 0
    try:
        return _supervise(folder, command)
    except FileNotFoundError:
        return 0  # the folder was removed: the group was deleted while it ran


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
