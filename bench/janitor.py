"""Janitor: the storage requests of one tick with 10,000 past runs against one with 100.

Counted by the same code as `tests/test_operations.py` (`tests/janitor_cost.py`: an azure-core
per-call hook on the app's storage clients), each history in its own journal table on one Azurite.
"""

from __future__ import annotations

import logging
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from devhost.azurite import start_azurite
from tests.janitor_cost import requests_of_a_tick
from tests.support import app_settings

logger = logging.getLogger(__name__)

FEW, MANY = 100, 10_000


@dataclass(frozen=True)
class JanitorCost:
    """Requests of one tick, by method and target, for each history."""

    few: Counter[str]
    many: Counter[str]


def measure() -> JanitorCost:
    with tempfile.TemporaryDirectory(prefix="loadme-bench-janitor-") as folder:
        workdir = Path(folder)
        storage = start_azurite(location=None, log_path=workdir / "azurite.log")
        try:
            few = requests_of_a_tick(app_settings(storage.connection_string, workdir / "few"), FEW)
            many = requests_of_a_tick(app_settings(storage.connection_string, workdir / "many"), MANY)
        finally:
            storage.stop()
    logger.info("janitor: a tick costs %d requests with %d past runs, %d with %d", sum(few.values()), FEW,
                sum(many.values()), MANY)
    return JanitorCost(few, many)
