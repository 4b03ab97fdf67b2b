"""CPU time spent by processes, and how busy the whole machine was, over a stretch of work (Linux)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def process_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) process `pid` has used itself, and its children it waited for."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command: state is field 3 of stat(5), so utime (14) .. cstime (17) are at 11..14 here.
    own, children = int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])
    return own / TICKS_PER_SECOND, children / TICKS_PER_SECOND


def own_seconds() -> float:
    """CPU seconds this process has used (all its threads)."""
    times = os.times()
    return times.user + times.system


@dataclass(frozen=True)
class MachineTimes:
    """The machine's CPU time so far, busy and in all, summed over its cores (/proc/stat)."""

    busy: float
    total: float

    @classmethod
    def now(cls) -> MachineTimes:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = values[3] + values[4]  # idle, iowait
        total = sum(values[:8])  # guest time is already in user
        return cls((total - idle) / TICKS_PER_SECOND, total / TICKS_PER_SECOND)

    def busy_share_since(self, earlier: MachineTimes) -> float:
        """How busy the machine was between `earlier` and this: 0 idle, 1 every core busy."""
        elapsed = self.total - earlier.total
        return (self.busy - earlier.busy) / elapsed if elapsed > 0 else 0.0
