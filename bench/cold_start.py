"""Cold start: how much longer importing the app takes than importing bare `azure.functions`.

Each import runs in a fresh interpreter (as the Functions worker imports `function_app.py` once per
process) and is timed inside it, so the interpreter's own start-up, the same for all, is left out.
The imports alternate (A, B, C, A, B, C, ...) so that whatever else loads the machine meanwhile hits
all alike; the figure is the ratio of the medians of the first two. The third, the app with every
`loadme` module its functions import when they first run, is what indexing cost before those
imports moved into the functions. All import from cached bytecode, as installed packages always do:
the first, unmeasured, import of each writes the app's `__pycache__` (even where
PYTHONDONTWRITEBYTECODE is set in the caller's environment).
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
class ColdStart:
    """Import times in seconds, one per fresh process, in the order they were taken."""

    app: list[float]
    bare: list[float]
    app_with_handlers: list[float]

    @property
    def app_median(self) -> float:
        return statistics.median(self.app)

    @property
    def bare_median(self) -> float:
        return statistics.median(self.bare)

    @property
    def app_with_handlers_median(self) -> float:
        return statistics.median(self.app_with_handlers)


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


def import_seconds(modules: str) -> float:
    """Seconds a fresh interpreter takes to import `modules` (timed inside it)."""
    code = (f"import time; started = time.perf_counter(); import {modules}; "
            "print(time.perf_counter() - started)")
    env = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          check=True)
    return float(done.stdout.strip())


def measure(samples: int = SAMPLES) -> ColdStart:
    """`samples` imports of each, interleaved, after one of each that compiles and caches the bytecode."""
    with_handlers = ", ".join([APP_MODULE, *handler_modules()])
    kinds = (APP_MODULE, BARE_MODULE, with_handlers)
    for modules in kinds:
        import_seconds(modules)
    taken: dict[str, list[float]] = {modules: [] for modules in kinds}
    for _ in range(samples):
        for modules in kinds:
            taken[modules].append(import_seconds(modules))
    result = ColdStart(taken[APP_MODULE], taken[BARE_MODULE], taken[with_handlers])
    logger.info("cold start: import %s %.1f ms, %s %.1f ms, the app with every handler %.1f ms (medians of %d)",
                APP_MODULE, result.app_median * 1000, BARE_MODULE, result.bare_median * 1000,
                result.app_with_handlers_median * 1000, samples)
    return result
