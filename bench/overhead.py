"""Per-run overhead: a run's end-to-end time less its job's own, against the floor of its queue hops.

Runs go one at a time on the warm local stack. End to end is from the client's POST to the run's
terminal event (its `at`, written by the app: no polling in the figure). The job is the no-op
command, timed on its own between runs. A one-step run makes two queue hops before it ends
(`initjob`, then the container's result on `stage2`); each hop's floor is one queue round trip
(send, receive, delete) on the same Azurite, measured between the runs.
"""

from __future__ import annotations

import logging
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bench.azurite_log import by_kind
from bench.local_stack import NOOP_COMMAND, BenchStack
from bench.storage_floor import FloorQueue, RoundTrips

logger = logging.getLogger(__name__)

RUNS = 15
ROUND_TRIPS_BETWEEN_RUNS = 10
HOPS_TO_THE_END = 2  # initjob, stage2 (removeinfra comes after the run ended)
TIMEOUT_SECONDS = 60.0
POLL_SECONDS = 0.05
STATUS_REQUESTS = 1  # GET /api/runs/{id} reads the run's partition: one table query
# The stretches of a run, between consecutive journal events (POST is the client's send).
STRETCHES = (("POST", "requested"), ("requested", "deploying"), ("deploying", "started"), ("started", "result"),
             ("result", "terminal"), ("terminal", "removed"))


@dataclass(frozen=True)
class RunTimes:
    """When each event of one run happened (seconds after its POST), and what it cost."""

    at: dict[str, float]
    job_seconds: float
    storage_requests: int  # Azurite's log while the run went through alone (the host's idle polls included)
    receives: int  # of those, the host's receives from the queues (polls, most of them empty)

    @property
    def end_to_end(self) -> float:
        return self.at["terminal"]

    @property
    def overhead(self) -> float:
        return self.end_to_end - self.job_seconds


@dataclass(frozen=True)
class Overhead:
    runs: list[RunTimes]
    hops: RoundTrips = field(repr=False)

    @property
    def median_overhead(self) -> float:
        return statistics.median(run.overhead for run in self.runs)

    @property
    def hop_floor(self) -> float:
        return HOPS_TO_THE_END * self.hops.median

    @property
    def median_storage_requests(self) -> float:
        return statistics.median(run.storage_requests for run in self.runs)

    @property
    def median_receives(self) -> float:
        return statistics.median(run.receives for run in self.runs)

    @property
    def median_job_seconds(self) -> float:
        return statistics.median(run.job_seconds for run in self.runs)

    def stretch_medians(self) -> dict[str, float]:
        """The median seconds of each stretch of a run (`requested -> deploying`, ...)."""
        return {f"{a} -> {b}": statistics.median(run.at[b] - run.at[a] for run in self.runs) for a, b in STRETCHES}


def job_seconds() -> float:
    """How long the no-op job takes on its own, started as the runner starts it."""
    started = time.perf_counter()
    subprocess.run(NOOP_COMMAND, check=True)
    return time.perf_counter() - started


def one_run(stack: BenchStack) -> RunTimes:
    job = job_seconds()
    log = stack.access_log
    mark = log.mark()
    posted = datetime.now(UTC)
    run_id = stack.submit_one()
    stack.wait_removed(run_id, TIMEOUT_SECONDS)
    status, asked = stack.status(run_id), 1
    while not status["cleaned_up"]:  # its group is gone; the `removed` row follows in a moment
        time.sleep(POLL_SECONDS)
        status, asked = stack.status(run_id), asked + 1
    logged = by_kind(log.requests(mark, log.mark()))
    requests, receives = sum(logged.values()) - asked * STATUS_REQUESTS, logged["queue receive"]
    if status["state"] != "succeeded":
        raise RuntimeError(f"run {run_id} ended {status['state']}: {status.get('reason')}")
    at = {"POST": 0.0}
    for event in status["events"]:
        at[event["event"]] = (datetime.fromisoformat(event["at"]) - posted).total_seconds()
    return RunTimes(at, job, requests, receives)


def measure(stack: BenchStack, floor: FloorQueue, runs: int = RUNS) -> Overhead:
    """`runs` runs one after another, with queue round trips between them."""
    times, hops = [], RoundTrips([])
    for _ in range(runs):
        hops += floor.round_trips(ROUND_TRIPS_BETWEEN_RUNS)
        times.append(one_run(stack))
    result = Overhead(times, hops)
    logger.info("overhead: median %.0f ms per run (job %.1f ms), hop floor %.1f ms; stretches %s",
                result.median_overhead * 1000, statistics.median(t.job_seconds for t in times) * 1000,
                result.hop_floor * 1000,
                ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in result.stretch_medians().items()))
    return result
