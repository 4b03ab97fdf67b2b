"""Cold start: how much longer importing the app takes than importing bare `azure.functions`.

Each import runs in a fresh interpreter (as the Functions worker imports `function_app.py` once per
process) and is timed inside it, so the interpreter's own start-up, the same for all, is left out.
The time is the import's CPU time: on shared cores a process that waits for a core is not importing,
and that wait, not the import, is what varies most from one sample to the next (its wall-clock time
is kept too). The imports alternate (A, B, C, A, B, C, ...) so that whatever else loads the machine
meanwhile hits all alike; the figure is the ratio of the medians of the first two. The third, the
app with every `loadme` module its functions import when they first run, is what indexing cost
before those imports moved into the functions. All import from cached bytecode, as installed
packages always do: the first, unmeasured, import of each writes the app's `__pycache__` (even
where PYTHONDONTWRITEBYTECODE is set in the caller's environment).
"""

from __future__ import annotations

import ast
import logging
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
APP_MODULE = "function_app"
BARE_MODULE = "azure.functions"
SAMPLES = 20


@dataclass(frozen=True)
class ImportTime:
    """One import in a fresh interpreter, in seconds."""

    cpu: float
    wall: float


@dataclass(frozen=True)
class ColdStart:
    """The imports, one per fresh process, in the order they were taken."""

    app: list[ImportTime]
    bare: list[ImportTime]
    app_with_handlers: list[ImportTime]

    @property
    def app_median(self) -> float:
        return statistics.median(t.cpu for t in self.app)

    @property
    def bare_median(self) -> float:
        return statistics.median(t.cpu for t in self.bare)

    @property
    def app_with_handlers_median(self) -> float:
        return statistics.median(t.cpu for t in self.app_with_handlers)

    @property
    def wall_ratio(self) -> float:
        """The same ratio of medians in wall-clock time."""
        return statistics.median(t.wall for t in self.app) / statistics.median(t.wall for t in self.bare)

    @property
    def paired_ratio_quartiles(self) -> tuple[float, float]:
        """The middle half of app ÷ bare taken pair by pair: how much the machine's noise moves the figure."""
        ratios = [app.cpu / bare.cpu for app, bare in zip(self.app, self.bare, strict=True)]
        low, _, high = statistics.quantiles(ratios, n=4)
        return low, high


def handler_modules(app: Path = REPO_ROOT / "function_app.py") -> list[str]:
    """The `loadme` modules the app's functions import when they first run (their bodies' imports)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(app.read_text())):
        if not isinstance(node, ast.FunctionDef):
            continue
        for inner in ast.walk(node):
            if isinstance(inner, ast.ImportFrom) and inner.module and inner.module.startswith("loadme"):
                found.update(f"loadme.{alias.name}" if inner.module == "loadme" else inner.module
                             for alias in inner.names)
    return sorted(found)


def import_time(modules: str) -> ImportTime:
    """What a fresh interpreter takes to import `modules` (timed inside it)."""
    code = ("import time; wall, cpu = time.perf_counter(), time.process_time(); "
            f"import {modules}; print(time.process_time() - cpu, time.perf_counter() - wall)")
    env = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          check=True)
    cpu, wall = (float(value) for value in done.stdout.split())
    return ImportTime(cpu, wall)


def measure(samples: int = SAMPLES) -> ColdStart:
    """`samples` imports of each, interleaved, after one of each that compiles and caches the bytecode."""
    with_handlers = ", ".join([APP_MODULE, *handler_modules()])
    kinds = (APP_MODULE, BARE_MODULE, with_handlers)
    for modules in kinds:
        import_time(modules)
    taken: dict[str, list[ImportTime]] = {modules: [] for modules in kinds}
    for _ in range(samples):
        for modules in kinds:
            taken[modules].append(import_time(modules))
    result = ColdStart(taken[APP_MODULE], taken[BARE_MODULE], taken[with_handlers])
    logger.info("cold start: CPU time of importing %s %.1f ms, %s %.1f ms, the app with every handler %.1f ms "
                "(medians of %d; wall-clock ratio %.2f)", APP_MODULE, result.app_median * 1000, BARE_MODULE,
                result.bare_median * 1000, result.app_with_handlers_median * 1000, samples, result.wall_ratio)
    return result
