"""A simulated ACI with Azure's quotas, behind the real management SDK clients (tests/fake_arm.py).

Per subscription and region ACI allows 100 container groups and 100 cores, and throttles creates
at 100 per 5 minutes and 300 per hour. A create over the groups or cores quota is answered 409 with
a quota error code, one over a create rate 429 TooManyRequests, as `tests/test_aci_functions.py`
models ACI's refusals (the app's executor maps both to a wait). A refused create counts toward no
limit. A deleted group stops counting at once. A template-spec deployment is answered like the
create it makes, at once (as tests/fake_arm.FakeAci does; ARM would accept it and fail it later).
Every request the SDK sends is recorded (`seen`), so the ARM requests per run are counted from the
real executor code.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tests.fake_arm import FakeAci, error

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AciQuota:
    """ACI's limits per subscription and region."""

    groups: int = 100
    cores: float = 100.0
    creates_per_5_minutes: int = 100
    creates_per_hour: int = 300


class QuotaAci(FakeAci):
    """FakeAci that enforces `AciQuota` and tells the simulation of each group it creates."""

    def __init__(self, clock: Callable[[], datetime], quota: AciQuota, on_created: Callable[[str], None]) -> None:
        super().__init__(clock, instance_view_lag=0.0, max_groups=quota.groups)
        self.quota = quota
        self.on_created = on_created
        self.cores: dict[str, float] = {}
        self.created_at: list[datetime] = []  # in time order
        self.refused: list[str] = []  # error codes of the creates ACI refused
        self.peak_groups = 0
        self.peak_cores = 0.0

    def _answer(self, method: str, path: str, body: Any) -> tuple[int, Any, dict[str, str]]:
        if method == "PUT" and self._DEPLOYMENT.fullmatch(path):  # a deployment of the template spec
            parameters = {name: wrapped["value"] for name, wrapped in body["properties"]["parameters"].items()}
            return self._create_group(parameters["containerGroupName"], parameters["tags"], float(parameters["cpu"]))
        match = self._GROUP.fullmatch(path)
        if method == "PUT" and match is not None and not match["logs"]:  # a direct create
            containers = body["properties"]["containers"]
            cores = sum(float(c["properties"]["resources"]["requests"]["cpu"]) for c in containers)
            return self._create_group(match["name"], body.get("tags") or {}, cores)
        return super()._answer(method, path, body)

    def cores_in_use(self) -> float:
        return sum(self.cores[name] for name in self.groups)

    def _create_group(self, name: str, tags: dict[str, str], cores: float) -> tuple[int, Any, dict[str, str]]:
        if name in self.groups:
            return super()._create(name, tags)
        now = self.clock()
        last_5_minutes = len(self.created_at) - bisect.bisect_right(self.created_at, now - timedelta(minutes=5))
        last_hour = len(self.created_at) - bisect.bisect_right(self.created_at, now - timedelta(hours=1))
        refusal = None
        if len(self.groups) >= self.quota.groups:
            refusal = 409, error("ContainerGroupQuotaReached", "the container group quota is reached")
        elif self.cores_in_use() + cores > self.quota.cores + 1e-9:
            refusal = 409, error("StandardCoresQuotaReached", "the standard cores quota is reached")
        elif last_5_minutes >= self.quota.creates_per_5_minutes or last_hour >= self.quota.creates_per_hour:
            refusal = 429, error("TooManyRequests", "container group creates are throttled")
        if refusal is not None:
            self.refused.append(refusal[1]["error"]["code"])
            return refusal[0], refusal[1], {}
        answer = super()._create(name, tags)
        self.cores[name] = cores
        self.created_at.append(now)
        self.peak_groups = max(self.peak_groups, len(self.groups))
        self.peak_cores = max(self.peak_cores, self.cores_in_use())
        self.on_created(name)
        return answer
