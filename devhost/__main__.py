"""`python -m devhost` (make dev): Azurite + the local host in the foreground; Ctrl-C stops both.

Reads `local.settings.json` (created from `local.settings.sample.json` when missing) the way
`func start` does: its `Values` become environment variables unless already set. Exits 1 with the
worker's own message when the Functions worker refuses the app.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from devhost.stack import REPO_ROOT, LocalStack, load_local_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devhost", description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("DEVHOST_PORT", "7071")))
    parser.add_argument("--settings", type=Path, default=REPO_ROOT / "local.settings.json")
    parser.add_argument("--no-azurite", action="store_true", help="use the storage in AzureWebJobsStorage as is")
    parser.add_argument("--azurite-dir", type=Path, default=REPO_ROOT / ".azurite")
    parser.add_argument("--lease-seconds", type=float, default=float(os.environ.get("DEVHOST_LEASE_SECONDS", "600")),
                        help="how long a message stays invisible without renewal (the host's is 10 minutes)")
    parser.add_argument("--duplicate-deliveries", action="store_true",
                        help="fault injection: deliver every queue message twice")
    parser.add_argument("--faults", help='fault injection plan, JSON: {"seed": 1, "transient_rate": 0.2, '
                        '"removal_failure_rate": 0.2}')
    parser.add_argument("--message-tap", type=Path, help="append every decoded queue message to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("azure", "urllib3", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    if not args.settings.exists():
        sample = REPO_ROOT / "local.settings.sample.json"
        args.settings.write_text(sample.read_text())
        logging.info("created %s from %s", args.settings.name, sample.name)
    load_local_settings(args.settings)

    from devhost.faults import DeliveryFaults, FaultPlan
    from devhost.worker import WorkerRefused

    faults = DeliveryFaults(FaultPlan.from_json(args.faults) if args.faults else None,
                            duplicate_deliveries=args.duplicate_deliveries, tap=args.message_tap)
    stack = LocalStack(port=args.port, azurite_dir=args.azurite_dir, use_azurite=not args.no_azurite,
                       azurite_log=args.azurite_dir.parent / ".azurite.log", lease_seconds=args.lease_seconds,
                       faults=faults)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even where it was inherited as ignored
    try:
        stack.start()
        print(f"local host ready on {stack.api}", flush=True)
        print(f"dashboard: {stack.api}/dashboard/", flush=True)
        stopped.wait()
    except WorkerRefused as exc:
        logging.error("the Functions worker refused the app:\n%s", exc)
        return 1
    except KeyboardInterrupt:
        logging.info("interrupted")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        stack.stop()
        logging.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
