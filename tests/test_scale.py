"""The scale claim, checked in CI: a burst of 2,000 runs through the app's real admission control,
deploy, result and removal code, against a simulated ACI with Azure's quotas (`bench/scale.py`),
fails no run by quota, never goes over a quota, and creates at least 95% of ACI's 300 groups per
hour. Hours of traffic on a fake clock: nothing sleeps, nothing is timed."""

from __future__ import annotations

import pytest

from bench.scale import ScaleResult, Workload, simulate

ACI_CREATES_PER_HOUR = 300


@pytest.fixture(scope="module")
def burst() -> ScaleResult:
    return simulate(Workload(runs=2000))


def test_no_run_of_the_burst_fails_by_quota(burst: ScaleResult) -> None:
    assert burst.runs == 2000
    assert burst.states == {"succeeded": 2000}, burst.states
    assert burst.waited_past_timeout > 1000  # most waited longer than their 1 h timeout: waits do not count
    assert not burst.refused_creates, f"ACI refused creates admission control allowed: {burst.refused_creates}"


def test_the_burst_never_goes_over_a_quota(burst: ScaleResult) -> None:
    assert burst.peak_groups <= burst.quota.groups
    assert burst.peak_cores <= burst.quota.cores


def test_the_burst_creates_at_least_95_percent_of_acis_hourly_rate(burst: ScaleResult) -> None:
    assert len(burst.creates_per_full_hour) >= 5  # the line was long enough to hold the rate for hours
    assert burst.creates_per_hour >= 0.95 * ACI_CREATES_PER_HOUR, burst.creates_per_full_hour


def test_a_run_that_reports_costs_three_arm_requests_at_scale(burst: ScaleResult) -> None:
    # Plus, in template-spec mode, the DELETE of the step's deployment record, so ARM's 800-deployment
    # history never fills (docs/aci.md): two DELETEs per run.
    assert burst.arm_requests == {"GET": 2000, "PUT": 2000, "DELETE": 4000}
