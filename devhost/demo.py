"""`make demo`: one run end to end on the local stack, then everything it started is stopped.

Starts Azurite (in memory, free ports) and the local host (with Azure's Python worker in its own
process), POSTs a run with two variables, waits
for it, and prints the timeline and the final variables (the job adds `___Message`). Exits 0 when
the run succeeded and its container process is gone; stops everything also when interrupted.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

REPO_ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_SECONDS = 90
TIMELINE_FIELDS = ("state", "trigger", "container_group", "exit_code", "reason", "blob")


def _print_run(status: dict[str, Any]) -> None:
    print(f"\nrun {status['run_id']}: {status['state']} (cleaned up: {status['cleaned_up']})")
    print("\ntimeline:")
    for event in status["events"]:
        detail = " ".join(f"{k}={v}" for k, v in event.items() if k in TIMELINE_FIELDS and v not in ("", None))
        print(f"  {event['at']}  step {event['step']}  {event['event']:<14} {detail}")
    print("\nfinal variables:")
    for name, value in sorted(status["variables"].items()):
        print(f"  {name} = {value}")


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Ctrl-C and SIGTERM both stop the demo cleanly, even where SIGINT was inherited as ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.path.insert(0, str(REPO_ROOT))
    from devhost.stack import LocalStack, load_local_settings
    from loadme.executors.local import process_alive

    workdir = Path(tempfile.mkdtemp(prefix="loadme-demo-"))
    os.environ["LOCAL_EXECUTOR_DIR"] = str(workdir / "containers")
    os.environ.setdefault("DEVHOST_WORKER_LOG_LEVEL", "WARNING")
    load_local_settings(REPO_ROOT / "local.settings.sample.json")
    stack = LocalStack(port=0, azurite_ports=None, azurite_log=workdir / "azurite.log")
    try:
        print("starting Azurite (in memory) and the local host ...", flush=True)
        stack.start()
        api = stack.api
        body = {"variables": {"___Name": "Ada Lovelace", "___Team": "analytical-engines"}}
        print(f"POST {api}/init_job {json.dumps(body)}", flush=True)
        response = requests.post(f"{api}/init_job", json=body, timeout=30)
        print(f"-> {response.status_code} {response.text}", flush=True)
        response.raise_for_status()
        status_url = response.json()["status_url"]

        give_up = time.monotonic() + TIMEOUT_SECONDS
        status: dict[str, Any] = {}
        while time.monotonic() < give_up:
            status = requests.get(status_url, timeout=30).json()
            if status["cleaned_up"]:
                break
            time.sleep(0.5)
        else:
            print(f"run did not finish within {TIMEOUT_SECONDS}s: {status.get('state')}", file=sys.stderr)
            return 1
        _print_run(status)

        ledger = workdir / "containers" / "starts.log"
        pids = [int(line.split()[1]) for line in ledger.read_text().splitlines()]
        leftovers = [pid for pid in pids if process_alive(pid)]
        print(f"\ncontainer processes started: {len(pids)}, still running: {len(leftovers)}")
        print(f"container log archived as blob: {status['logs']}")
        ok = status["state"] == "succeeded" and "___Message" in status["variables"] and not leftovers
        return 0 if ok else 1
    except KeyboardInterrupt:
        print("\ninterrupted; stopping everything", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
