"""Local throughput: runs per second through the local stack, against the storage floor.

The floor is what storage alone would allow: Azurite's operations per second (a tight loop of
queue round trips, before and after, on the same Azurite) divided by the storage requests one run
needs. Those are counted, not assumed: every request Azurite logged while the runs went through,
whoever sent it (host, worker, containers), divided by the number of runs.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass

from bench.azurite_log import by_kind
from bench.cpu import MachineTimes
from bench.local_stack import BenchStack, CpuSeconds
from bench.storage_floor import FloorQueue, RoundTrips

logger = logging.getLogger(__name__)

RUNS = 200
FLOOR_ROUND_TRIPS = 300
TIMEOUT_SECONDS = 300.0


@dataclass(frozen=True)
class Throughput:
    """What `runs` no-op runs took, and the floor measured around them."""

    runs: int
    seconds: float
    requests: Counter[str]  # by kind, everything Azurite served while the runs went through
    floor: RoundTrips
    cpu: CpuSeconds
    machine_busy: float  # share of all cores busy meanwhile, whoever used them

    @property
    def runs_per_second(self) -> float:
        return self.runs / self.seconds

    @property
    def requests_per_run(self) -> float:
        return sum(self.requests.values()) / self.runs

    @property
    def floor_runs_per_second(self) -> float:
        return self.floor.operations_per_second / self.requests_per_run


def measure(stack: BenchStack, floor: FloorQueue, runs: int = RUNS) -> Throughput:
    """Submit `runs` no-op runs at once and wait until every one is done and removed."""
    before = floor.round_trips(FLOOR_ROUND_TRIPS)
    already = len(stack.started_groups())
    log = stack.access_log
    mark, cpu, machine = log.mark(), stack.cpu_seconds(), MachineTimes.now()
    started = time.perf_counter()
    run_ids = stack.submit(runs)
    stack.wait_all_removed(already + runs, TIMEOUT_SECONDS)
    seconds = time.perf_counter() - started
    requests = by_kind(log.requests(mark, log.mark()))
    used, busy = stack.cpu_seconds().minus(cpu), MachineTimes.now().busy_share_since(machine)
    after = floor.round_trips(FLOOR_ROUND_TRIPS)
    succeeded = set(stack.runs_in_state("succeeded"))
    missing = [run_id for run_id in run_ids if run_id not in succeeded]
    if missing:
        raise RuntimeError(f"{len(missing)} of {runs} runs did not succeed, e.g. {stack.status(missing[0])}")
    result = Throughput(runs, seconds, requests, before + after, used, busy)
    logger.info("throughput: %d runs in %.1f s (%.2f/s), %.1f requests per run, floor %.0f ops/s -> %.2f runs/s",
                runs, seconds, result.runs_per_second, result.requests_per_run,
                result.floor.operations_per_second, result.floor_runs_per_second)
    return result
