"""`make test-stress`: the whole suite N times on a fresh clone, with every core kept busy meanwhile.

    python tools/stress_test.py [--runs N] [--keep]

Clones the repository's committed HEAD into a temporary folder (as CI does: nothing uncommitted, no
caches, ../shared beside it), sets it up once (`make deps`), then runs `make test` N times (default 5) while one busy
loop per core competes for the CPU, as on a shared CI machine. Prints each run's outcome, then the
pass count and every failing test id with how often it failed. Exits 0 only when every run passed.
Not part of `make test` or CI: it takes an hour or so on two cores.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
BUSY_LOOP = "while True: pass"


def failures(junit: Path) -> list[str]:
    """The ids of the tests that failed or errored in a JUnit XML report (all of them if it is missing)."""
    if not junit.exists():
        return ["<no report: the suite did not run to its end>"]
    found = []
    for case in ElementTree.parse(junit).getroot().iter("testcase"):  # noqa: S314 - our own pytest wrote it
        if case.find("failure") is not None or case.find("error") is not None:
            found.append(f"{case.get('classname')}::{case.get('name')}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make test-stress", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=int(os.environ.get("STRESS_RUNS", "5")))
    parser.add_argument("--keep", action="store_true", help="keep the clone and the reports")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="loadme-stress-"))
    clone = workdir / "loadme"
    subprocess.run(["git", "clone", "--quiet", str(REPO_ROOT), str(clone)], check=True)
    shared = REPO_ROOT.parent / "shared"
    if shared.is_dir():  # as in CI: ../shared (the offline ARM validator) beside the checkout
        (workdir / "shared").symlink_to(shared, target_is_directory=True)
    else:
        print(f"stress: {shared} not found: the infra validation test will fail as it would in CI", flush=True)
    head = subprocess.run(["git", "-C", str(clone), "rev-parse", "--short", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()
    print(f"stress: {args.runs} run(s) of `make test` on a fresh clone of {head} in {clone}, "
          f"{os.cpu_count()} busy loop(s) beside it", flush=True)
    subprocess.run(["make", "deps"], cwd=clone, check=True, stdout=subprocess.DEVNULL)
    failed: collections.Counter[str] = collections.Counter()
    passed = 0
    try:
        for run in range(1, args.runs + 1):
            junit = workdir / f"run-{run}.xml"
            load = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(os.cpu_count() or 2)]
            started = time.monotonic()
            try:
                result = subprocess.run(["make", "test", f"PYTEST_ARGS=--junitxml={junit} -p no:cacheprovider"],
                                        cwd=clone, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            finally:
                for process in load:
                    process.kill()
                    process.wait()
            minutes = (time.monotonic() - started) / 60
            if result.returncode == 0:
                passed += 1
                print(f"stress: run {run}: passed ({minutes:.1f} min)", flush=True)
                continue
            ids = failures(junit)
            failed.update(ids)
            (workdir / f"run-{run}.log").write_text(result.stdout)
            print(f"stress: run {run}: FAILED ({minutes:.1f} min): {', '.join(ids) or 'lint or type check'}"
                  f" (log: {workdir / f'run-{run}.log'})", flush=True)
    finally:
        if not args.keep and not failed:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"stress: {passed} of {args.runs} runs passed")
    for test_id, count in failed.most_common():
        print(f"stress:   {count}x {test_id}")
    return 0 if passed == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
