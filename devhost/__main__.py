"""`python -m devhost`: Azurite + the local host in the foreground; Ctrl-C stops both.

Reads `local.settings.json` (created from `local.settings.sample.json` when missing) the way
`func start` does: its `Values` become environment variables unless already set.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def load_local_settings(path: Path) -> None:
    """Put `Values` of a local.settings.json into the environment (existing variables win)."""
    values = json.loads(path.read_text()).get("Values", {})
    for key, value in values.items():
        os.environ.setdefault(key, str(value))


def _stop_local_containers() -> None:
    """Ctrl-C stops everything the stack started, local containers included."""
    from loadme.context import get_context
    from loadme.executors.local import LocalExecutor

    executor = get_context().executor
    if isinstance(executor, LocalExecutor):
        stopped = executor.stop_all()
        if stopped:
            logging.info("stopped %d local container(s); the janitor records their runs", stopped)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devhost", description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("DEVHOST_PORT", "7071")))
    parser.add_argument("--settings", type=Path, default=REPO_ROOT / "local.settings.json")
    parser.add_argument("--no-azurite", action="store_true", help="use the storage in AzureWebJobsStorage as is")
    parser.add_argument("--azurite-dir", type=Path, default=REPO_ROOT / ".azurite")
    parser.add_argument("--lease-seconds", type=float, default=float(os.environ.get("DEVHOST_LEASE_SECONDS", "60")))
    parser.add_argument("--duplicate-deliveries", action="store_true",
                        help="fault injection: deliver every queue message twice")
    parser.add_argument("--faults", help='fault injection plan, JSON: {"seed": 1, "transient_rate": 0.2, '
                        '"removal_failure_rate": 0.2}')
    parser.add_argument("--message-tap", type=Path, help="append every decoded queue message to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    if not args.settings.exists():
        sample = REPO_ROOT / "local.settings.sample.json"
        args.settings.write_text(sample.read_text())
        logging.info("created %s from %s", args.settings.name, sample.name)
    load_local_settings(args.settings)

    from devhost.azurite import DEFAULT_PORTS, start_azurite

    azurite = None
    if not args.no_azurite:
        azurite = start_azurite(location=args.azurite_dir, ports=DEFAULT_PORTS,
                                log_path=args.azurite_dir.parent / ".azurite.log")
        os.environ["AzureWebJobsStorage"] = azurite.connection_string
        logging.info("Azurite on ports %s, data in %s", azurite.ports, args.azurite_dir)

    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even where it was inherited as ignored
    host = None
    try:
        from devhost.faults import FaultPlan
        from devhost.host import LocalHost
        from devhost.hostconfig import QueueSettings
        from loadme.context import get_context

        sys.path.insert(0, str(REPO_ROOT))
        import function_app

        host = LocalHost(function_app.app, get_context().storage,
                         QueueSettings.from_host_json(REPO_ROOT / "host.json"),
                         port=args.port, lease_seconds=args.lease_seconds,
                         duplicate_deliveries=args.duplicate_deliveries, message_tap=args.message_tap,
                         faults=FaultPlan.from_json(args.faults) if args.faults else None)
        host.start()
        print(f"local host ready on http://127.0.0.1:{host.port}/api", flush=True)
        stopped.wait()
    except KeyboardInterrupt:
        logging.info("interrupted")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        if host is not None:
            host.stop()
            _stop_local_containers()
        if azurite is not None:
            azurite.stop()
        logging.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
