"""`make bench`: measure every figure, print the table, write `bench/RESULTS.md`.

    python -m bench [--output bench/RESULTS.md]

Takes a few minutes on two cores: cold start (40 fresh interpreters), the local stack (warm-up, runs one
at a time, then a burst of 200), the janitor (10,100 past runs written to Azurite), the simulated burst.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import cold_start, janitor, overhead, scale, throughput
from bench.figures import markdown_table
from bench.local_stack import running_stack
from bench.machine import this_machine
from bench.report import Measurements, figures, results_markdown
from bench.storage_floor import FloorQueue

logger = logging.getLogger("bench")
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
WARM_UP_RUNS = 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the results (Markdown)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)
    # Every process this starts (interpreters timed, the worker, local containers) imports from cached
    # bytecode, as deployed code does, even where the caller's environment says not to write it.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    machine, started, clock = this_machine(), datetime.now(UTC), time.monotonic()
    logger.info("machine: %s", "; ".join(line[2:] for line in machine.describe()))

    logger.info("cold start: importing the app and bare azure.functions in fresh interpreters ...")
    cold = cold_start.measure()
    with tempfile.TemporaryDirectory(prefix="loadme-bench-") as workdir, running_stack(Path(workdir)) as stack:
        floor = FloorQueue(dict(os.environ))
        logger.info("local stack up; %d warm-up runs, then runs one at a time ...", WARM_UP_RUNS)
        overhead.measure(stack, floor, runs=WARM_UP_RUNS)
        alone = overhead.measure(stack, floor)
        logger.info("local stack: %d runs at once ...", throughput.RUNS)
        burst = throughput.measure(stack, floor)
    logger.info("janitor: %d and %d past runs ...", janitor.FEW, janitor.MANY)
    tick = janitor.measure()
    workload = scale.Workload()
    logger.info("scale: simulating a burst of %d runs ...", workload.runs)
    simulated = scale.simulate(workload)

    measured = Measurements(machine, started, cold, alone, burst, tick, simulated, workload)
    rows = figures(measured)
    elapsed = time.monotonic() - clock
    print(markdown_table(rows))
    args.output.write_text(results_markdown(measured, rows, elapsed))
    logger.info("written to %s after %.1f minutes", args.output, elapsed / 60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
