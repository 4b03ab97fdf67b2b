"""The host's timer trigger: NCRONTAB schedules, `%SETTING%` resolved from the app settings.

Follows the Timers extension (Azure/azure-webjobs-sdk-extensions, `TimerTriggerAttribute`,
`CronSchedule`, `TimerSchedule.Create`, `ScheduleStatus`): six fields, seconds first;
`runOnStartup` fires once when the host starts; a tick later than its due time is flagged
`IsPastDue`; `ScheduleStatus` (last, next, last updated) is sent only with `useMonitor` and a
schedule that fires at most once a minute (the extension turns the monitor off for faster ones).
Not emulated: the monitor's blob record across host restarts. A failed timer invocation is logged
and the schedule goes on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from croniter import croniter

logger = logging.getLogger("devhost.timers")
PAST_DUE_SECONDS = 1.0


def parse_ncrontab(expression: str, start: datetime) -> croniter:
    """A croniter for a six-field NCRONTAB expression. Raises ValueError if it is not one."""
    fields = expression.split()
    if len(fields) != 6:
        raise ValueError(f"NCRONTAB needs six fields (seconds first), got {expression!r}")
    return croniter(" ".join(fields[1:] + fields[:1]), start)


class TimerSchedule:
    """Fires `fire(past_due, last, next_due)` on a schedule until `stop` is set."""

    def __init__(self, function_name: str, expression: str, run_on_startup: bool, use_monitor: bool,
                 fire: Callable[[bool, dict[str, str] | None], None], stop: threading.Event) -> None:
        self.function_name = function_name
        self.expression = expression
        self._schedule = parse_ncrontab(expression, datetime.now(UTC))
        probe = parse_ncrontab(expression, datetime.now(UTC))
        first, second = probe.get_next(datetime), probe.get_next(datetime)
        self._monitored = use_monitor and (second - first).total_seconds() >= 60
        self._run_on_startup = run_on_startup
        self._fire = fire
        self._stop = stop

    def run(self) -> None:
        last: datetime | None = None
        if self._run_on_startup:
            now = datetime.now(UTC)
            self._tick(False, last, now)
            last = now
        while not self._stop.is_set():
            due: datetime = self._schedule.get_next(datetime)
            if self._stop.wait(max(0.0, (due - datetime.now(UTC)).total_seconds())):
                return
            self._tick((datetime.now(UTC) - due).total_seconds() > PAST_DUE_SECONDS, last, due)
            last = due

    def _tick(self, past_due: bool, last: datetime | None, due: datetime) -> None:
        status = None
        if self._monitored:
            following = parse_ncrontab(self.expression, due).get_next(datetime)
            status = {"Last": (last or datetime.min.replace(tzinfo=UTC)).isoformat(),
                      "Next": following.isoformat(), "LastUpdated": datetime.now(UTC).isoformat()}
        try:
            self._fire(past_due, status)
        except Exception as exc:  # noqa: BLE001 - as the host: a failed timer run is logged, the schedule goes on
            logger.error("%s: timer invocation failed: %s", self.function_name, exc)
