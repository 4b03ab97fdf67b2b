"""What the benchmark ran on: cores, CPU model, RAM, Python, and the load when it started."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Machine:
    """The machine as the figures' reader needs to know it."""

    cores: int
    cpu_model: str
    ram_gib: float
    python: str
    load_average: tuple[float, float, float]
    system: str

    def describe(self) -> list[str]:
        """Markdown bullet lines."""
        one, five, fifteen = self.load_average
        return [
            f"- cores: {self.cores}",
            f"- CPU: {self.cpu_model}",
            f"- RAM: {self.ram_gib:.1f} GiB",
            f"- Python: {self.python}",
            f"- system: {self.system}",
            f"- load average at start: {one:.2f} (1 min), {five:.2f} (5 min), {fifteen:.2f} (15 min)",
        ]


def _proc_field(path: str, key: str) -> str:
    """The value of the first `key: value` line of a /proc file ("" when there is none)."""
    try:
        for line in Path(path).read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key:
                return value.strip()
    except OSError:
        return ""
    return ""


def this_machine() -> Machine:
    """Describe the machine this process runs on (Linux /proc; elsewhere what `platform` knows)."""
    memory = _proc_field("/proc/meminfo", "MemTotal")  # "24121234 kB"
    ram_gib = int(memory.split()[0]) / 1024 ** 2 if memory else 0.0
    return Machine(
        cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0,
        cpu_model=_proc_field("/proc/cpuinfo", "model name") or platform.processor() or "unknown",
        ram_gib=ram_gib,
        python=platform.python_version(),
        load_average=os.getloadavg(),
        system=f"{platform.system()} {platform.release()}",
    )
