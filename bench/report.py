"""The figures from this run's measurements, and `bench/RESULTS.md`: the machine, the table, and what
each figure means, its goal and, where it is missed, what bounds it (with this run's numbers)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bench.cold_start import SAMPLES, ColdStart, handler_modules
from bench.figures import Direction, Figure, Goal, format_value, markdown_table
from bench.janitor import FEW, MANY, JanitorCost
from bench.local_stack import NOOP_COMMAND
from bench.machine import Machine
from bench.overhead import HOPS_TO_THE_END, Overhead
from bench.scale import HOP_SECONDS, ScaleResult, Workload
from bench.storage_floor import OPERATIONS_PER_ROUND_TRIP
from bench.throughput import Throughput

ACI_CREATES_PER_HOUR = 300
# docs/aci.md: GET, template-spec PUT, DELETE of the group, DELETE of its deployment record
ARM_REQUESTS_PER_REPORTED_RUN = 4


@dataclass(frozen=True)
class Measurements:
    """Everything one `make bench` measured."""

    machine: Machine
    started: datetime
    cold_start: ColdStart
    overhead: Overhead
    throughput: Throughput
    janitor: JanitorCost
    scale: ScaleResult
    workload: Workload


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 0.1 else f"{seconds * 1000:.0f} ms"


def figures(m: Measurements) -> list[Figure]:
    """The table's rows."""
    cold, through, over, scale, janitor = m.cold_start, m.throughput, m.overhead, m.scale, m.janitor
    quota = scale.quota
    arm = ", ".join(f"{method} {count:,}" for method, count in sorted(scale.arm_requests.items()))
    low, high = cold.paired_ratio_quartiles
    return [
        Figure("cold start", "import `function_app` ÷ import bare `azure.functions`", cold.app_median,
               cold.bare_median, Goal(Direction.AT_MOST, 1.15),
               f"{_ms(cold.app_median)} ÷ {_ms(cold.bare_median)} of CPU (medians of {SAMPLES} fresh processes "
               f"each; paired ratios' middle half {low:.2f}-{high:.2f}; wall clock {cold.wall_ratio:.2f})"),
        Figure("local throughput", "runs per second ÷ storage floor in runs per second", through.runs_per_second,
               through.floor_runs_per_second, Goal(Direction.AT_LEAST, 0.5),
               f"{through.runs_per_second:.2f} ÷ {through.floor_runs_per_second:.2f} runs/s "
               f"({through.floor.operations_per_second:.0f} Azurite ops/s ÷ {through.requests_per_run:.1f} "
               f"requests per run; {through.runs} runs)"),
        Figure("per-run overhead", f"(end to end - job) ÷ {HOPS_TO_THE_END} queue round trips",
               over.median_overhead, over.hop_floor, Goal(Direction.AT_MOST, 2.0),
               f"{_ms(over.median_overhead)} ÷ {_ms(over.hop_floor)} (medians of {len(over.runs)} runs)"),
        Figure("scale: runs failed by quota", "runs not succeeded ÷ runs", scale.failed_by_quota, scale.runs,
               Goal(Direction.EXACTLY, 0.0), f"{scale.failed_by_quota:,} ÷ {scale.runs:,} (simulated)"),
        Figure("scale: peak groups", "peak container groups ÷ ACI's quota", scale.peak_groups, quota.groups,
               Goal(Direction.AT_MOST, 1.0), f"{scale.peak_groups} ÷ {quota.groups}"),
        Figure("scale: peak cores", "peak cores ÷ ACI's quota", scale.peak_cores, quota.cores,
               Goal(Direction.AT_MOST, 1.0), f"{scale.peak_cores:g} ÷ {quota.cores:g}"),
        Figure("scale: create rate", "creates per hour ÷ ACI's 300", scale.creates_per_hour, ACI_CREATES_PER_HOUR,
               Goal(Direction.AT_LEAST, 0.95),
               f"{scale.creates_per_hour:.1f} ÷ {ACI_CREATES_PER_HOUR} (mean of {len(scale.creates_per_full_hour)} "
               "full hours)"),
        Figure("scale: ARM requests per run", "ARM requests ÷ runs", sum(scale.arm_requests.values()), scale.runs,
               Goal(Direction.EXACTLY, ARM_REQUESTS_PER_REPORTED_RUN),
               f"{sum(scale.arm_requests.values()):,} ÷ {scale.runs:,} ({arm}); the janitor "
               f"{scale.janitor_arm_requests_per_run:.2f} more"),
        Figure("janitor", f"storage requests per tick, {MANY:,} ÷ {FEW} past runs", sum(janitor.many.values()),
               sum(janitor.few.values()), Goal(Direction.ABOUT, 1.0, 0.05),
               f"{sum(janitor.many.values())} ÷ {sum(janitor.few.values())} requests"),
    ]


def _outcome(figure: Figure) -> str:
    return (f"**{'Met' if figure.met else 'Missed'}: {format_value(figure.value)}** "
            f"(goal {figure.goal}).")


def _breakdown(counts: dict[str, float], unit: str = "") -> str:
    return ", ".join(f"{name} {value:.1f}{unit}" for name, value in sorted(counts.items(), key=lambda kv: -kv[1]))


def explanations(m: Measurements, rows: list[Figure]) -> list[str]:
    """A section per figure: how it is measured, its goal, and what bounds it."""
    row = {figure.name: figure for figure in rows}
    cold, through, over, scale, janitor, work = m.cold_start, m.throughput, m.overhead, m.scale, m.janitor, m.workload
    cpu = through.cpu.per(through.runs)
    per_run = {kind: count / through.runs for kind, count in through.requests.items()}
    stretches = over.stretch_medians()
    per_request = over.hops.median / OPERATIONS_PER_ROUND_TRIP
    requests_alone = over.median_storage_requests
    lines = [
        "### Cold start",
        "",
        "The worker imports `function_app.py` once per process to index the functions: the app's share of "
        "a cold start. Each import runs in a fresh interpreter and is timed inside it (the interpreter's own "
        "start-up, the same for both, is left out), from cached bytecode as installed packages are; app and "
        f"bare `azure.functions` alternate, {SAMPLES} of each, and the figure is the ratio of the medians. "
        "The time is the import's CPU time: on two shared cores under other load a process spends much of an "
        "import waiting for a core, and that wait, not the import, is what varies most between samples. "
        f"{_outcome(row['cold start'])} The table also gives the middle half of the ratios taken pair by pair, "
        "and the same ratio in wall-clock time, which moves by up to a tenth from run to run here.",
        "",
        f"Before, `function_app.py` imported every handler at its top: importing the app with all "
        f"{len(handler_modules())} handler modules its functions now import when they first run took "
        f"{_ms(cold.app_with_handlers_median)} of CPU in this run, "
        f"{cold.app_with_handlers_median / cold.bare_median:.2f}x bare `azure.functions`. Now indexing loads "
        "8 light `loadme` modules (context, settings, names, errors, loading and what settings needs) and no "
        "Azure SDK beyond `azure.functions` (`tests/test_worker_conformance.py` keeps it so); the first call of "
        "any function imports the rest, once, under one lock (`loadme/loading.py`: concurrent first imports of "
        "azure.core can meet a half-initialized module). What remains is the decorators' own work and the "
        "settings table the trigger parameters come from."
        + ("" if row["cold start"].met else " To see what grew: `.venv/bin/python -X importtime -c 'import "
           "function_app'`."),
        "",
        "### Local throughput",
        "",
        f"{through.runs} runs of a no-op job (`{' '.join(NOOP_COMMAND)}`) are POSTed at once to the local stack "
        "`make demo` uses (Azurite, the local host with Azure's worker, the local executor; admission limits "
        "opened, as the local executor has no ACI quota) and timed from the first POST until every container "
        f"group is removed: {through.seconds:.1f} s. The floor is what storage alone would allow: Azurite's "
        "operations per second in a tight loop of queue round trips (send, receive, delete) with the app's own "
        f"client on the same Azurite, before and after the runs ({through.floor.operations_per_second:.0f} ops/s), "
        "divided by the storage requests a run needs. Those are counted, not assumed: every request in Azurite's "
        "access log while the runs went through, whoever sent it (host, worker, containers), divided by the "
        f"runs: {through.requests_per_run:.1f} per run ({_breakdown(per_run)}; the receives include the host's "
        f"polls). {_outcome(row['local throughput'])}",
        "",
        f"What bounds it is CPU. The machine's cores were {through.machine_busy:.0%} busy meanwhile (other work "
        f"included), and the stack used {cpu.total:.2f} CPU-seconds per run: containers {cpu.containers:.2f} "
        "(each local container is two Python interpreters, the executor's supervisor and the runner, which "
        f"imports requests), the worker {cpu.worker:.2f}, Azurite {cpu.azurite:.2f}, the local host with this "
        f"benchmark's client {cpu.host_and_benchmark:.2f}. {m.machine.cores} cores ÷ {cpu.total:.2f} CPU-s = "
        f"{m.machine.cores / cpu.total:.2f} runs/s at most, with the machine to itself.",
        "",
        "### Per-run overhead",
        "",
        f"{len(over.runs)} runs one at a time on the warm stack. End to end is from the client's POST to the "
        "run's terminal event (the time the app wrote in it), less the job's own time (the no-op command timed "
        f"alone between runs: {_ms(over.median_job_seconds)}). The floor is the {HOPS_TO_THE_END} queue hops a "
        "one-step run makes before it ends (`initjob`, then the container's result on `stage2`), each one queue "
        "round trip on the same Azurite measured between the runs (median "
        f"{_ms(over.hops.median)}). {_outcome(row['per-run overhead'])}",
        "",
        ("A run is much more than two bare queue hops, and that is what bounds it. Median stretches: "
         + ", ".join(f"{name} {_ms(value)}" for name, value in stretches.items()) + ". "
         f"A run going through alone shows {requests_alone:.0f} storage requests in Azurite's log, "
         f"{over.median_receives:.0f} of them the host's receives (its polls of the three queues meanwhile); the "
         f"other {requests_alone - over.median_receives:.0f} are the run's own and nearly all in sequence "
         "(journal rows and the gets before them, the run index, admission's ETag-checked write, the log upload "
         f"and the result post), at about {_ms(per_request)} each here (a third of a round trip): "
         f"{_ms((requests_alone - over.median_receives) * per_request)}, "
         f"{(requests_alone - over.median_receives) * per_request / over.hop_floor:.0f}x the hop floor on their "
         "own. Then the local container: the supervisor's and the runner's interpreters start (deploying -> "
         f"started, and much of started -> result; {cpu.containers:.2f} CPU-s per container in the burst above); "
         "and the result on `stage2` comes from outside the host, so the host sees it at its next poll, up to "
         "`maxPollingInterval` (2 s) later, as in Azure. The local container alone costs more than the whole "
         "floor, so no faster part brings this near 2x; what the app could cut is its sequential requests per "
         "step (one read of the run's partition instead of a get per event, index updates off the critical "
         "path)."
         if not row["per-run overhead"].met else "Met."),
        "",
        "### Scale (simulated)",
        "",
        f"A burst of {scale.runs:,} runs, POSTed 10 ms apart, goes through the app's real code "
        "(`bench/scale.py`): `start_run`, `deploy_step` with admission control (`loadme.admission.Admission` on "
        "an in-memory store implementing its protocol) and its wait decisions, the ACI executor and the "
        "management SDK clients, `accept_result`, `remove_step`, the journal and its index, and the janitor "
        "every 5 minutes. ARM is a simulated ACI (`bench/sim_aci.py`) with Azure's quotas: 100 groups, 100 "
        "cores, creates throttled at 100 per 5 minutes and 300 per hour; a create over quota is refused as ACI "
        "refuses it (409 quota code, 429), and nothing else fails. Each container provisions for "
        f"{work.provisioning_seconds[0]:.0f}-{work.provisioning_seconds[1]:.0f} s, then runs its job, log-normal "
        f"with median {work.job_median_seconds / 60:.0f} min (seed {work.seed}); a message is seen "
        f"{HOP_SECONDS:.0f} s after it is due. The app is configured as `infra/` deploys it (template-spec "
        "deployments, identity, `CAPACITY_*` at their defaults: 95 groups, 95 cores, 95 creates per 5 minutes, "
        f"290 per hour). Time is a fake clock: {scale.drained_hours:.1f} hours of traffic, nothing sleeps. "
        "`tests/test_scale.py` runs the same burst in `make test` and asserts the first four goals.",
        "",
        f"- Runs failed by quota: {_outcome(row['scale: runs failed by quota'])} Every run succeeded; ACI "
        f"refused {sum(scale.refused_creates.values())} creates. Each run has the default timeout "
        f"(`RUN_TIMEOUT_SECONDS`, {work.timeout_seconds // 60} min) and {scale.waited_past_timeout:,} of them "
        "waited longer than that in the line before their container was created: the time a step waits for "
        "capacity does not count toward its run's deadline (`loadme/deploy.py`), so a burst larger than an hour "
        "of creates (290) waits its turn instead of timing out.",
        f"- Peak groups and cores: {_outcome(row['scale: peak groups'])} / {_outcome(row['scale: peak cores'])} "
        "Admission stops at 95, five under each quota (each container asks for one core).",
        f"- Create rate: {_outcome(row['scale: create rate'])} Creates in each full hour while runs waited: "
        f"{', '.join(str(c) for c in scale.creates_per_full_hour)}. Admission allows 290 per hour, so 0.967 is "
        "the ceiling; waiting steps look again sooner the nearer they are to the head of the line (10 s at the "
        "head, up to 10 min at the tail), so the steps next in line are there when capacity frees. That costs "
        "invocations: "
        f"`dq_init_job` ran {scale.deliveries['initjob'] / scale.runs:.1f} times per run.",
        f"- ARM requests per run: {_outcome(row['scale: ARM requests per run'])} Counted from the requests the "
        "real executor sent through the management SDK to the simulated ACI for `dq_init_job` and "
        "`remove_infra`: a GET (does the group exist?), the template-spec deployment PUT, the DELETE of the "
        "group and the DELETE of its deployment record (so ARM's 800-deployment history never fills). The "
        f"janitor's {scale.janitor_ticks} ticks meanwhile sent {scale.janitor_arm_requests_per_run:.2f} more per "
        f"run: one LIST of the groups per tick ({scale.janitor_arm_requests['LIST']}), and a GET of the state of "
        f"every group still running at each tick ({scale.janitor_arm_requests['GET']:,}), so a container that runs "
        "m minutes costs about m/5 GETs more.",
        "",
        "### Janitor",
        "",
        f"One janitor tick a day after {FEW} and after {MANY:,} runs finished, each history in a journal table "
        "of its own on one Azurite, its storage requests counted by an azure-core per-call hook on the app's "
        "clients (`tests/janitor_cost.py`, shared with `tests/test_operations.py`). "
        f"{_outcome(row['janitor'])} The tick reads only bounded partitions (active steps, capacity and waiting "
        "line, poison queues, retention's place): "
        + ", ".join(f"{name} {count}" for name, count in sorted(janitor.many.items())) + ".",
    ]
    return lines


def results_markdown(m: Measurements, rows: list[Figure], elapsed_seconds: float) -> str:
    """The whole of `bench/RESULTS.md`."""
    return "\n".join([
        "# Benchmark results",
        "",
        "Written by `make bench` (`python -m bench`); every figure below comes from one run of it. Each figure is "
        "a ratio of two things measured side by side in that run, so a slower or busier machine moves both "
        "sides alike.",
        "",
        f"Run of {m.started:%Y-%m-%d %H:%M} UTC, {elapsed_seconds / 60:.1f} minutes in all, on:",
        "",
        *m.machine.describe(),
        "",
        "## Figures",
        "",
        markdown_table(rows),
        "",
        "## What each figure means",
        "",
        *explanations(m, rows),
        "",
    ])
