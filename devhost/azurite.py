"""Start and stop Azurite (the storage emulator, from npm, pinned in package.json)."""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from loadme.storage import DEV_ACCOUNT, DEV_KEY

REPO_ROOT = Path(__file__).resolve().parents[1]
AZURITE_BIN = REPO_ROOT / "node_modules" / ".bin" / "azurite"
DEFAULT_PORTS = (10000, 10001, 10002)
PORT_ATTEMPTS = 3


class AzuriteError(RuntimeError):
    """Azurite could not be started."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def connection_string(blob: int, queue: int, table: int) -> str:
    """A connection string for Azurite's well-known account on these ports."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{blob}/{DEV_ACCOUNT};"
        f"QueueEndpoint=http://127.0.0.1:{queue}/{DEV_ACCOUNT};"
        f"TableEndpoint=http://127.0.0.1:{table}/{DEV_ACCOUNT};"
    )


@dataclass
class Azurite:
    """A running Azurite process."""

    process: subprocess.Popen[bytes]
    ports: tuple[int, int, int]
    log_path: Path

    @property
    def connection_string(self) -> str:
        return connection_string(*self.ports)

    def stop(self, grace_seconds: float = 3.0) -> None:
        """Stop Azurite and wait for it; kill it if it lingers (it waits for idle keep-alive clients)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=grace_seconds)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_azurite(
    location: Path | None = None,
    ports: tuple[int, int, int] | None = None,
    log_path: Path | None = None,
    timeout: float = 60.0,
    access_log: bool = False,
) -> Azurite:
    """Start Azurite: data under `location`, or in memory when None; free ports unless given. With
    `access_log` its log gets one line per request it serves (what `make bench` counts).

    Free ports are picked, then bound by Azurite a moment later: when something else took one in
    between, Azurite is started again on new ones. Raises AzuriteError with its output when it is
    not installed or does not start in time.
    """
    if not AZURITE_BIN.exists():
        raise AzuriteError(f"{AZURITE_BIN} not found: run `npm ci` in {REPO_ROOT} (make does it)")
    for attempt in range(1, PORT_ATTEMPTS + 1):
        chosen = ports or (free_port(), free_port(), free_port())
        try:
            return _start(location, chosen, log_path or Path(tempfile.gettempdir()) / f"azurite-{chosen[1]}.log",
                          timeout, access_log)
        except _PortTaken:
            if ports is not None or attempt == PORT_ATTEMPTS:
                raise AzuriteError(f"Azurite could not bind {chosen}: a port is in use") from None
    raise AssertionError("unreachable")


class _PortTaken(Exception):
    pass


def _start(location: Path | None, ports: tuple[int, int, int], log_path: Path, timeout: float,
           access_log: bool) -> Azurite:
    argv = [
        str(AZURITE_BIN), *([] if access_log else ["--silent"]), "--skipApiVersionCheck", "--loose",
        "--disableProductStyleUrl",
        "--blobHost", "127.0.0.1", "--queueHost", "127.0.0.1", "--tableHost", "127.0.0.1",
        "--blobPort", str(ports[0]), "--queuePort", str(ports[1]), "--tablePort", str(ports[2]),
    ]
    if location is None:
        argv.append("--inMemoryPersistence")
    else:
        location.mkdir(parents=True, exist_ok=True)
        argv += ["--location", str(location)]
    log = open(log_path, "wb")  # noqa: SIM115 - handed to the child process
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    azurite = Azurite(process, ports, log_path)
    try:
        give_up = time.monotonic() + timeout
        while time.monotonic() < give_up:
            if process.poll() is not None:
                output = log_path.read_text()[-2000:]
                if "EADDRINUSE" in output:
                    raise _PortTaken()
                raise AzuriteError(f"Azurite exited with {process.returncode}: {output}")
            # Listening ports are ours only while the process lives (another program may hold one).
            if all(_listening(p) for p in ports) and process.poll() is None:
                return azurite
            time.sleep(0.1)
        raise AzuriteError(f"Azurite did not listen on {ports} within {timeout}s: {log_path.read_text()[-2000:]}")
    except BaseException:  # interrupted or failed while starting: leave nothing behind
        azurite.stop()
        raise


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0
