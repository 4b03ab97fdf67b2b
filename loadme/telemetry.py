"""Structured records for Azure Monitor: what the portal's workbook and alert rules query.

Each record is one log line from the `loadme.telemetry` logger whose `extra` carries `record_type`
and the fields listed in `RECORD_FIELDS`. In Azure the app runs with the Application Insights
OpenTelemetry distro (`PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true`), which stores `extra`
as custom dimensions: `AppTraces.Properties` in the Log Analytics workspace, `traces.customDimensions`
in Application Insights. Locally they are ordinary log lines.

Records never carry variable values or secrets: only ids, states, counts, exit codes and reasons
(reasons are written by this app, never copied from a job's output).
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("loadme.telemetry")

RUN_EVENT = "run_event"
JANITOR_TICK = "janitor_tick"
POISON_QUEUE = "poison_queue"
REMOVAL_FAILED = "removal_failed"

# The contract with infra/ (workbook, alert rules): tests/test_infra_contract.py checks that every
# field a query names is listed here.
RECORD_FIELDS: dict[str, tuple[str, ...]] = {
    # One per journal event of a run. `state` is set on the run's terminal event (succeeded,
    # failed, timed_out, cancelled); `duration_seconds` there is the run's time from request to end.
    RUN_EVENT: ("run_id", "step", "event", "state", "duration_seconds", "exit_code", "reason", "trigger",
                "container_group"),
    # One per janitor pass: container groups alive, those alive past their run's deadline, and what it did.
    JANITOR_TICK: ("groups_alive", "groups_past_deadline", "removals", "timed_out", "failed"),
    # One per poison queue per janitor pass.
    POISON_QUEUE: ("queue", "depth", "oldest_age_seconds"),
    # A container group deletion that failed (remove_infra raised; the host retries it).
    REMOVAL_FAILED: ("run_id", "step", "container_group", "reason"),
}


def emit(record_type: str, message: str, *args: Any, **fields: Any) -> None:
    """Log one structured record (`message` %-formatted with `args`).

    Raises ValueError for a field the contract does not list.
    """
    allowed = RECORD_FIELDS[record_type]
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        raise ValueError(f"{record_type} record has fields outside its contract: {', '.join(unknown)}")
    extra = {name: fields.get(name) for name in allowed}
    logger.info(message, *args, extra={"record_type": record_type, **extra})
