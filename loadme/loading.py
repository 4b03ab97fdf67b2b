"""Import what the functions use once, under one lock, before the first function runs.

Indexing imports only what the decorators need (cold start, see function_app.py), so the rest is
imported by the first call of a function. The worker runs functions on a thread pool: two first calls
at once, each importing parts of azure.core (whose modules import one another), can be handed a
half-initialized module, because Python's per-module import locks break such a cycle instead of
waiting ("ImportError: cannot import name 'SpanKind' from partially initialized module
'azure.core.tracing'", seen on the local stack under load). So every function calls `load_all()`
first: the first call imports everything below while the others wait, then it costs one flag read.
The ACI management SDKs are loaded the same way, but only where the ACI executor's clients are built
(`loadme.executors.aci`): the local executor never imports them and HTTP functions do not pay for them.
`tests/test_worker_conformance.py` checks the two lists cover every import made inside a function.
"""

from __future__ import annotations

import importlib
import threading

MODULES = (
    # the Azure SDKs, imported lazily by loadme
    "azure.core",
    "azure.core.credentials",
    "azure.core.exceptions",
    "azure.core.pipeline",
    "azure.core.tracing",
    "azure.data.tables",
    "azure.identity",
    "azure.storage.blob",
    "azure.storage.queue",
    # the handlers and what they import lazily
    "loadme.admission",
    "loadme.api",
    "loadme.cancel",
    "loadme.cleanup",
    "loadme.credentials",
    "loadme.deploy",
    "loadme.envelope",
    "loadme.executors",
    "loadme.executors.aci",
    "loadme.executors.local",
    "loadme.failures",
    "loadme.images",
    "loadme.janitor",
    "loadme.journal",
    "loadme.openapi",
    "loadme.poison",
    "loadme.reports",
    "loadme.results",
    "loadme.runs",
    "loadme.settings",
    "loadme.slot",
    "loadme.static",
    "loadme.storage",
    "loadme.variables",
    "uuid",
)

ACI_MODULES = (
    "azure.mgmt.containerinstance",
    "azure.mgmt.containerinstance.models",
    "azure.mgmt.containerregistry",
    "azure.mgmt.resource.deployments",
    "azure.mgmt.resource.deployments.models",
)

_lock = threading.Lock()
_loaded: set[tuple[str, ...]] = set()


def load_all() -> None:
    """Import every module in MODULES, once per process; concurrent callers wait for the first.
    Raises ImportError if one is missing (a broken deployment: the function fails and is retried)."""
    load(MODULES)


def load(modules: tuple[str, ...]) -> None:
    """Import `modules` once per process, under the one lock every such load takes. Raises ImportError."""
    if modules in _loaded:
        return
    with _lock:
        if modules not in _loaded:
            for name in modules:
                importlib.import_module(name)
            _loaded.add(modules)
