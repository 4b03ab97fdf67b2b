"""The local stack as one object: Azurite, the storage the infra would create, and the local host.

`python -m devhost` (make dev), `make demo` and the end-to-end tests all start it this way, and
`stop()` stops everything it started, local containers included.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from devhost.azurite import DEFAULT_PORTS, Azurite, start_azurite
from devhost.faults import DeliveryFaults
from devhost.host import LocalHost
from devhost.hostconfig import HostSettings
from devhost.queues import DEFAULT_LEASE_SECONDS

logger = logging.getLogger("devhost")
REPO_ROOT = Path(__file__).resolve().parents[1]


def load_local_settings(path: Path) -> None:
    """Put `Values` of a local.settings.json into the environment (variables already set win),
    as `func start` does."""
    values = json.loads(path.read_text()).get("Values", {})
    for key, value in values.items():
        os.environ.setdefault(key, str(value))


def create_app_storage() -> None:
    """Create what infra/main.json creates in Azure: the trigger queues and their poison queues, the
    journal table and the logs container."""
    from loadme.context import get_context
    from loadme.names import TRIGGER_QUEUES, poison_queue

    get_context().storage.ensure_resources([*TRIGGER_QUEUES, *(poison_queue(q) for q in TRIGGER_QUEUES)])


def stop_local_containers() -> int:
    """Stop every local container process the executor started (their runs are recorded by the janitor)."""
    from loadme.context import get_context
    from loadme.executors.local import LocalExecutor

    executor = get_context().executor
    return executor.stop_all() if isinstance(executor, LocalExecutor) else 0


class LocalStack:
    """Azurite (unless told to use the storage in AzureWebJobsStorage) and the local host, on `port`
    (0: one the kernel picks, read back from `api` once started)."""

    def __init__(
        self,
        port: int = 7071,
        azurite_dir: Path | None = None,
        use_azurite: bool = True,
        azurite_ports: tuple[int, int, int] | None = DEFAULT_PORTS,
        azurite_log: Path | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        faults: DeliveryFaults | None = None,
    ) -> None:
        self.port = port
        self.azurite_dir = azurite_dir
        self.use_azurite = use_azurite
        self.azurite_ports = azurite_ports
        self.azurite_log = azurite_log
        self.lease_seconds = lease_seconds
        self.faults = faults
        self.azurite: Azurite | None = None
        self.host: LocalHost | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.host.port if self.host else self.port}/api"

    def start(self) -> None:
        """Start everything; on failure stop what was started and raise (WorkerRefused, AzuriteError...)."""
        try:
            if self.use_azurite:
                self.azurite = start_azurite(location=self.azurite_dir, ports=self.azurite_ports,
                                             log_path=self.azurite_log)
                os.environ["AzureWebJobsStorage"] = self.azurite.connection_string
                logger.info("Azurite on ports %s (%s)", self.azurite.ports, self.azurite_dir or "in memory")
            create_app_storage()
            self.host = LocalHost(REPO_ROOT, HostSettings.from_host_json(REPO_ROOT / "host.json"),
                                  port=self.port, lease_seconds=self.lease_seconds, faults=self.faults)
            self.host.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the host (in-flight invocations finish), the local containers, then Azurite."""
        if self.host is not None:
            self.host.stop()
            self.host = None
            stopped = stop_local_containers()
            if stopped:
                logger.info("stopped %d local container(s); the janitor records their runs", stopped)
        if self.azurite is not None:
            self.azurite.stop()
            self.azurite = None
