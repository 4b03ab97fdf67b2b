"""Start and stop Azurite (the storage emulator, from npm, pinned in package.json)."""

from __future__ import annotations

import os
import re
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


class AzuriteError(RuntimeError):
    """Azurite could not be started."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now. Nothing reserves it: another process
    may be handed the same one before it is bound, so a server of ours binds port 0 instead and says
    which port it got (start_azurite, the local host)."""
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
    in_memory: bool = False

    @property
    def connection_string(self) -> str:
        return connection_string(*self.ports)

    def stop(self, grace_seconds: float = 3.0) -> None:
        """Stop Azurite and wait for it; kill it if it lingers (it waits for idle keep-alive clients).
        In memory it has nothing to save: it is killed at once (an idle client of the tests would
        otherwise hold every stop for the whole grace period)."""
        if self.process.poll() is None:
            if self.in_memory:
                self.process.kill()
                self.process.wait()
                return
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
    """Start Azurite: data under `location`, or in memory when None; on these ports, or on ports the
    kernel picks when None. With `access_log` its log gets one line per request it serves (what
    `make bench` counts).

    Free ports are asked of the kernel (port 0) by Azurite itself and read from its log, so two
    Azurites started at once (parallel test workers) can never be handed the same port, and a port
    another program listens on is never taken for ours. Raises AzuriteError with its output when it
    is not installed, a given port is in use, or it does not start in time.
    """
    if not AZURITE_BIN.exists():
        raise AzuriteError(f"{AZURITE_BIN} not found: run `npm ci` in {REPO_ROOT} (make does it)")
    if log_path is None:
        handle, name = tempfile.mkstemp(prefix="azurite-", suffix=".log")
        os.close(handle)
        log_path = Path(name)
    return _start(location, ports or (0, 0, 0), log_path, timeout, access_log)


# Azurite's own line once a service is bound, with the port it got (Azure/Azurite src/azurite.ts prints
# `${server.getHttpServerAddress()}`, the address the server's socket is bound to).
_LISTENING = re.compile(r"Azurite (Blob|Queue|Table) service is successfully listening at http://127\.0\.0\.1:(\d+)")
_SERVICES = ("Blob", "Queue", "Table")


def _bound_ports(output: str) -> tuple[int, int, int] | None:
    """The ports Azurite says its three services listen on, once it has said so for all three."""
    found = {service: int(port) for service, port in _LISTENING.findall(output)}
    if not all(service in found for service in _SERVICES):
        return None
    blob, queue, table = (found[service] for service in _SERVICES)
    return blob, queue, table


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
    log.close()  # the child has its own copy
    azurite = Azurite(process, ports, log_path, in_memory=location is None)
    try:
        give_up = time.monotonic() + timeout
        while time.monotonic() < give_up:
            output = log_path.read_text(errors="replace")
            if process.poll() is not None:
                if "EADDRINUSE" in output:
                    raise AzuriteError(f"Azurite could not bind {ports}: a port is in use")
                raise AzuriteError(f"Azurite exited with {process.returncode}: {output[-2000:]}")
            bound = _bound_ports(output)
            if bound is not None:
                azurite.ports = bound
                return azurite
            time.sleep(0.1)
        raise AzuriteError(f"Azurite did not listen on {ports} within {timeout}s: {log_path.read_text()[-2000:]}")
    except BaseException:  # interrupted or failed while starting: leave nothing behind
        azurite.stop()
        raise
