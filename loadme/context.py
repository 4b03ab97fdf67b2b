"""The per-process context: settings, clock, storage clients, journal and executor.

Built once from the app settings on first use (not at import: cold start, and so tests and tools
can import the app without settings). Tests inject their own with `set_context`. The modules behind
each dependency are imported when it is first built, so importing this module (as `function_app.py`
does at indexing) costs next to nothing.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from loadme.admission import Admission
    from loadme.executors import Executor
    from loadme.journal import Journal
    from loadme.settings import Settings
    from loadme.storage import StorageClients


def utc_now() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


class Context:
    """Everything a handler needs, each dependency created on first use and then shared."""

    def __init__(
        self,
        settings: Settings,
        clock: Callable[[], datetime] = utc_now,
        executor: Executor | None = None,
        storage: StorageClients | None = None,
    ) -> None:
        from loadme.storage import StorageClients
        from loadme.variables import VariableFactory

        self.settings = settings
        self.clock = clock
        self._executor = executor
        self.storage = storage or StorageClients(settings)
        self.variables = VariableFactory(settings.variable_prefix, settings.secret_variables)

    @functools.cached_property
    def executor(self) -> Executor:
        from loadme.executors import create_executor

        return self._executor or create_executor(self.settings)

    @functools.cached_property
    def admission(self) -> Admission:
        from loadme.admission import Admission, TableAdmission

        return Admission(TableAdmission(self.storage.admission), self.settings.capacity, self.clock)

    @functools.cached_property
    def journal(self) -> Journal:
        from loadme.journal import Journal

        return Journal(self.storage.table, self.clock)

    @classmethod
    def from_mapping(cls, env: Mapping[str, str]) -> Context:
        """A context from app settings. Raises SettingsError naming every problem."""
        from loadme.settings import Settings

        return cls(Settings.from_mapping(env))


_lock = threading.Lock()
_context: Context | None = None


def get_context() -> Context:
    """The process's context, built from the app settings the first time. Raises SettingsError."""
    global _context
    from loadme.settings import Settings

    with _lock:
        if _context is None:
            _context = Context(Settings.from_environment())
        return _context


def set_context(context: Context | None) -> None:
    """Replace the process's context (tests, the local host); None rebuilds it on next use."""
    global _context
    with _lock:
        _context = context


def configure_logging() -> None:
    """Quiet the Azure SDK's request logging (it is verbose and at INFO level by default)."""
    for name in ("azure", "azure.core.pipeline.policies.http_logging_policy", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)
