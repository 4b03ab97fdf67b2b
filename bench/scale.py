"""Scale, simulated: a burst of runs through the app's real code against a simulated ACI with Azure's
quotas, on a fake clock (hours of traffic in seconds, nothing sleeps).

Real: `loadme.runs.start_run` (each POST), `loadme.deploy.deploy_step` (`dq_init_job`: admission
control through `loadme.admission.Admission`, its wait decisions, the ACI executor and its error
mapping), `loadme.results.accept_result` (`stage2`), `loadme.cleanup.remove_step` (`remove_infra`),
the journal and its index, and the management SDK clients, whose requests the simulated ACI answers
(`bench/sim_aci.py`) and counts. Simulated: storage (`bench/sim_storage.py`: the journal table, the
admission store and the queues in memory, a message visible `HOP_SECONDS` after it is due, as the
host's polling would see it), each container (provisioning, then its job, then the runner's result
on `stage2`), and time. The janitor runs every 5 minutes (`JANITOR_SCHEDULE`'s default) as its
timer would; its ARM requests are counted apart from the runs' own. The host's retries are not
simulated: nothing in the simulation fails a delivery, and a handler raising ends the simulation
with its traceback.

The app is configured as `infra/` deploys it: template-spec deployments, storage and result posts
by managed identity (no SAS), admission at its defaults (`CAPACITY_*`: 95 groups, 95 cores, 95
creates per 5 minutes, 290 per hour). A create ACI refuses is answered at once
(`bench/sim_aci.py`), so a refusal goes through the executor's error mapping and the app's wait.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from azure.mgmt.containerinstance import ContainerInstanceManagementClient
from azure.mgmt.resource.deployments import DeploymentsMgmtClient

from bench.sim_aci import AciQuota, QuotaAci
from bench.sim_storage import MemoryAdmission, SimulatedStorage
from loadme.admission import Admission
from loadme.api import start_request_from_object
from loadme.cleanup import remove_step
from loadme.context import Context
from loadme.deploy import deploy_step
from loadme.envelope import RemovalMessage, ResultMessage, StepMessage, decode
from loadme.executors.aci import SDK_RETRIES, AciExecutor
from loadme.janitor import sweep
from loadme.journal import EventType
from loadme.names import INITJOB_QUEUE, REMOVEINFRA_QUEUE, STAGE2_QUEUE
from loadme.results import accept_result
from loadme.runs import start_run
from loadme.settings import Settings
from loadme.slot import Slot
from loadme.tokens import result_token
from tests.fake_arm import RG, SUB, FakeCredential

logger = logging.getLogger(__name__)

START = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
HOP_SECONDS = 1.0  # a message is seen this long after it is due (maxPollingInterval is 2 s)
SUBMIT_SECONDS = 0.01  # one POST after another
JANITOR_SECONDS = 300  # JANITOR_SCHEDULE's default: every 5 minutes
IDENTITY = f"/subscriptions/{SUB}/resourceGroups/mgmt/providers/Microsoft.ManagedIdentity/userAssignedIdentities/c"
TEMPLATE_SPEC = f"/subscriptions/{SUB}/resourceGroups/mgmt/providers/Microsoft.Resources/templateSpecs/aci/versions/1"


@dataclass(frozen=True)
class Workload:
    """The burst: how many runs, and how long their containers take (drawn from a seeded generator)."""

    runs: int = 2000
    seed: int = 11
    provisioning_seconds: tuple[float, float] = (30.0, 90.0)  # uniform
    job_median_seconds: float = 480.0  # log-normal: median 8 minutes, mean about 10
    job_sigma: float = 0.7
    job_seconds_bounds: tuple[float, float] = (10.0, 3300.0)
    timeout_seconds: int = 3600  # RUN_TIMEOUT_SECONDS' default; waiting for capacity does not count toward it

    def container_seconds(self, rng: random.Random) -> tuple[float, float]:
        """Provisioning and job seconds of one container."""
        low, high = self.job_seconds_bounds
        job = min(high, max(low, rng.lognormvariate(math.log(self.job_median_seconds), self.job_sigma)))
        return rng.uniform(*self.provisioning_seconds), job


def simulation_settings() -> dict[str, str]:
    """App settings of the simulated deployment, as infra/main.json sets them (no storage key: nothing
    signs a SAS)."""
    return {
        "EXECUTOR": "aci", "AzureWebJobsStorage__accountName": "loadmesimulated", "RESULT_AUTH": "identity",
        "RESULT_KEY": "simulation-result-key-0123456789-abcdefghij", "DEFAULT_IMAGE": "loadmeacr.azurecr.io/job:1",
        "AZURE_SUBSCRIPTION_ID": SUB, "DEPLOYMENT_RESOURCE_GROUP": RG, "ACI_LOCATION": "westeurope",
        "DEPLOY_MODE": "templatespec", "TEMPLATE_SPEC_VERSION_ID": TEMPLATE_SPEC, "CONTAINER_IDENTITY_ID": IDENTITY,
        "CONTAINER_IDENTITY_CLIENT_ID": "00000000-0000-0000-0000-00000000c11e",
        "REGISTRY_SERVER": "loadmeacr.azurecr.io",
    }


@dataclass
class ScaleResult:
    """What the burst did, from the journal and from the simulated ACI."""

    runs: int
    states: Counter[str]  # terminal state of each run ("unfinished" for none)
    quota: AciQuota
    peak_groups: int
    peak_cores: float
    creates_per_full_hour: list[int]  # creates in each whole hour while steps were still waiting
    refused_creates: Counter[str]  # ACI's error codes
    arm_requests: Counter[str]  # the runs' own (dq_init_job, remove_infra), by method
    janitor_arm_requests: Counter[str]  # the janitor's ticks: LIST of the groups, GET of a group's state
    janitor_ticks: int
    deliveries: Counter[str]  # handler invocations, by queue
    drained_hours: float  # from the first POST to the last removal
    waited_past_timeout: int  # runs deployed later after their POST than their whole timeout

    @property
    def failed_by_quota(self) -> int:
        """Runs that did not succeed: nothing but the burst can fail one here."""
        return self.runs - self.states["succeeded"]

    @property
    def creates_per_hour(self) -> float:
        full = self.creates_per_full_hour
        return sum(full) / len(full) if full else math.nan

    @property
    def arm_requests_per_run(self) -> float:
        return sum(self.arm_requests.values()) / self.runs

    @property
    def janitor_arm_requests_per_run(self) -> float:
        return sum(self.janitor_arm_requests.values()) / self.runs


class SimulatedContext(Context):
    """The app's context with admission control on the in-memory store."""

    def __init__(self, settings: Settings, clock: SimulatedClock, executor: AciExecutor,
                 storage: SimulatedStorage) -> None:
        super().__init__(settings, clock=clock, executor=executor, storage=storage)
        self.admission_store = MemoryAdmission()

    @functools.cached_property
    def admission(self) -> Admission:
        return Admission(self.admission_store, self.settings.capacity, self.clock)


class SimulatedClock:
    """The simulation's time: it moves only from one event to the next."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


class ScaleSimulation:
    """Events in time order: POSTs, message deliveries, containers ending."""

    def __init__(self, workload: Workload, quota: AciQuota | None = None) -> None:
        self.workload = workload
        self.clock = SimulatedClock(START)
        self.settings = Settings.from_mapping(simulation_settings())
        assert self.settings.aci is not None
        self.aci = QuotaAci(self.clock, quota or AciQuota(), self._container_created)
        options = self.aci.client_options(SDK_RETRIES)
        executor = AciExecutor(self.settings.aci, ContainerInstanceManagementClient(FakeCredential(), SUB, **options),
                               DeploymentsMgmtClient(FakeCredential(), SUB, **options))
        self.ctx = SimulatedContext(self.settings, self.clock, executor, SimulatedStorage(self.settings, self._send))
        self._events: list[tuple[datetime, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._rng = random.Random(workload.seed)
        self._containers: dict[str, tuple[float, float]] = {}  # run id -> provisioning, job seconds
        self._deploying: StepMessage | None = None
        self.run_ids: list[str] = []
        self.deliveries: Counter[str] = Counter()
        self.janitor_requests: Counter[str] = Counter()
        self.janitor_ticks = 0
        self.last_removal = START

    # ---- the event loop ----------------------------------------------------------------------
    def _at(self, when: datetime, action: Callable[[], None]) -> None:
        heapq.heappush(self._events, (when, next(self._order), action))

    def run(self) -> ScaleResult:
        for index in range(self.workload.runs):
            self._at(START + timedelta(seconds=index * SUBMIT_SECONDS), self._post)
        self._at(START + timedelta(seconds=JANITOR_SECONDS), self._janitor_tick)
        while self._events:
            when, _, action = heapq.heappop(self._events)
            self.clock.now = when
            action()
        return self._result()

    # ---- what the app and the platform do ----------------------------------------------------
    def _post(self) -> None:
        """POST /api/init_job, as `init_job` handles it."""
        request = start_request_from_object({"variables": {"___Name": f"run-{len(self.run_ids)}"},
                                             "timeout_seconds": self.workload.timeout_seconds},
                                            self.settings, self.ctx.variables)
        started = start_run(self.ctx, request, "http")
        assert started.message is not None
        self.run_ids.append(started.run_id)
        self._containers[started.run_id] = self.workload.container_seconds(self._rng)
        self._send(INITJOB_QUEUE, started.message.to_json(), 0.0)

    def _send(self, queue: str, text: str, invisible_seconds: float) -> None:
        """A message to `queue`, delivered once visible and seen by the host's polling."""
        due = self.clock.now + timedelta(seconds=invisible_seconds + HOP_SECONDS)
        self._at(due, lambda: self._deliver(queue, text))

    def _deliver(self, queue: str, text: str) -> None:
        """The queue-triggered function of `queue`, with its output bindings, as function_app.py wires it."""
        self.deliveries[queue] += 1
        if queue == INITJOB_QUEUE:
            self._deploying = decode(text, StepMessage)
            for removal in deploy_step(self.ctx, self._deploying):
                self._send(REMOVEINFRA_QUEUE, removal.to_json(), 0.0)
            self._deploying = None
        elif queue == STAGE2_QUEUE:
            follow = accept_result(self.ctx, decode(text, ResultMessage))
            for step in follow.next_steps:
                self._send(INITJOB_QUEUE, step.to_json(), 0.0)
            for removal in follow.removals:
                self._send(REMOVEINFRA_QUEUE, removal.to_json(), 0.0)
        elif queue == REMOVEINFRA_QUEUE:
            remove_step(self.ctx, decode(text, RemovalMessage))
            self.last_removal = self.clock.now
        else:
            raise ValueError(f"no function is triggered by queue {queue}")

    def _janitor_tick(self) -> None:
        """The janitor's timer, as function_app.py wires it; it fires again while work remains."""
        before = len(self.aci.seen)
        for removal in sweep(self.ctx).removals:
            self._send(REMOVEINFRA_QUEUE, removal.to_json(), 0.0)
        self.janitor_requests.update("LIST" if seen.path.endswith("/containerGroups") else seen.method
                                     for seen in self.aci.seen[before:])
        self.janitor_ticks += 1
        if self._events:
            self._at(self.clock.now + timedelta(seconds=JANITOR_SECONDS), self._janitor_tick)

    def _container_created(self, group: str) -> None:
        """ACI created `group` for the step being deployed: it provisions, runs its job, and its runner
        posts the result."""
        step = self._deploying
        assert step is not None, f"{group} was created outside dq_init_job"
        provisioning, job = self._containers[step.run_id]
        self._at(self.clock.now + timedelta(seconds=provisioning + job), lambda: self._container_ended(group, step))

    def _container_ended(self, group: str, step: StepMessage) -> None:
        self.aci.finish(group, 0)
        result = ResultMessage(
            step.run_id, step.step, token=result_token(self.settings.result_key, Slot.of(step)),
            exit_code=0, variables={**step.variables, "___Message": "done"}, log_tail="done",
            finished_at=self.clock.now.isoformat(), log_uploaded=True)
        self._send(STAGE2_QUEUE, result.to_json(), 0.0)

    # ---- the outcome -------------------------------------------------------------------------
    def _result(self) -> ScaleResult:
        journal = self.ctx.journal
        states: Counter[str] = Counter()
        waited_past_timeout = 0
        for run_id in self.run_ids:
            terminal = journal.terminal(run_id)
            states[str(terminal.details["state"]) if terminal else "unfinished"] += 1
            requested, deploying = journal.requested(run_id), journal.get(run_id, 1, EventType.DEPLOYING)
            if requested and deploying and (datetime.fromisoformat(deploying.at) - datetime.fromisoformat(
                    requested.at)).total_seconds() > self.workload.timeout_seconds:
                waited_past_timeout += 1
        created = self.aci.created_at
        full_hours = int((created[-1] - START).total_seconds() // 3600) if created else 0
        per_hour = Counter(int((at - START).total_seconds() // 3600) for at in created)
        return ScaleResult(
            runs=len(self.run_ids), states=states, quota=self.aci.quota, peak_groups=self.aci.peak_groups,
            peak_cores=self.aci.peak_cores, creates_per_full_hour=[per_hour[h] for h in range(full_hours)],
            refused_creates=Counter(self.aci.refused),
            arm_requests=Counter(s.method for s in self.aci.seen) - Counter(
                {"GET": sum(self.janitor_requests.values())}),
            janitor_arm_requests=self.janitor_requests, janitor_ticks=self.janitor_ticks,
            deliveries=self.deliveries, drained_hours=(self.last_removal - START).total_seconds() / 3600,
            waited_past_timeout=waited_past_timeout,
        )


def simulate(workload: Workload | None = None, quota: AciQuota | None = None) -> ScaleResult:
    """Run the burst to its end; what it did."""
    result = ScaleSimulation(workload or Workload(), quota).run()
    logger.info("scale: %d runs %s; peak %d groups, %.0f cores; %.1f creates per hour; %d refused; "
                "%.2f ARM requests per run; drained after %.1f h", result.runs, dict(result.states),
                result.peak_groups, result.peak_cores, result.creates_per_hour, sum(result.refused_creates.values()),
                result.arm_requests_per_run, result.drained_hours)
    return result
