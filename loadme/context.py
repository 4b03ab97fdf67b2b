"""The per-process context: settings, clock, storage clients, journal and executor.

Built once from the app settings on first use (not at import: cold start, and so tests and tools
can import the app without settings). Tests inject their own with `set_context`.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from loadme.admission import Admission, TableAdmission
from loadme.executors import Executor, create_executor
from loadme.journal import Journal
from loadme.settings import Settings
from loadme.storage import StorageClients
from loadme.variables import VariableFactory


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
        self.settings = settings
        self.clock = clock
        self._executor = executor
        self.storage = storage or StorageClients(settings)
        self.variables = VariableFactory(settings.variable_prefix, settings.secret_variables)

    @functools.cached_property
    def executor(self) -> Executor:
        return self._executor or create_executor(self.settings)

    @functools.cached_property
    def admission(self) -> Admission:
        return Admission(TableAdmission(self.storage.admission), self.settings.capacity, self.clock)

    @functools.cached_property
    def journal(self) -> Journal:
        return Journal(self.storage.table, self.clock)

    @classmethod
    def from_mapping(cls, env: Mapping[str, str]) -> Context:
        """A context from app settings. Raises SettingsError naming every problem."""
        return cls(Settings.from_mapping(env))


_lock = threading.Lock()
_context: Context | None = None


def get_context() -> Context:
    """The process's context, built from the app settings the first time. Raises SettingsError."""
    global _context
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
