"""The language worker process: Azure's Python worker library behind a stream of FunctionRpc messages.

    python -m devhost.worker_process SOCKET_FD

In Azure the .NET host starts a Python process, the proxy worker, which reads `StreamingMessage`s
from a gRPC stream and hands each to the worker library pinned in requirements.txt
(`azure_functions_runtime`): it starts the library's thread pool, then awaits
`worker_init_request` (which indexes `function_app.py`), `functions_metadata_request`,
`function_load_request` and `invocation_request` on its asyncio loop, each as its own task, with a
`WorkerRequest(name, request, properties)` whose `properties["protos"]` are the protocol classes
(Azure/azure-functions-python-worker, `workers/proxy_worker/dispatcher.py`:
`_dispatch_grpc_request`, `_handle__worker_init_request`, `_handle__invocation_request`).

This process does the same over an inherited socket instead of gRPC: frames of a 4-byte big-endian
length and a serialized `StreamingMessage` (the same protobuf encoding). stdout and stderr stay free
for the functions' own output, as in Azure.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import sys
import threading
from dataclasses import dataclass
from typing import Any

from devhost import rpc

logger = logging.getLogger("devhost.worker_process")
HEADER = struct.Struct(">I")


@dataclass(frozen=True)
class WorkerRequest:
    """What the proxy worker passes to each library handler (dispatcher.py `WorkerRequest`)."""

    name: str
    request: Any
    properties: dict[str, Any] | None = None


def read_frame(sock: socket.socket) -> bytes | None:
    """One frame's payload; None when the other side closed the connection."""
    header = _read_exactly(sock, HEADER.size)
    if header is None:
        return None
    payload = _read_exactly(sock, HEADER.unpack(header)[0])
    if payload is None:
        raise ConnectionError("the connection closed in the middle of a frame")
    return payload


def write_frame(sock: socket.socket, payload: bytes) -> None:
    """Send one frame."""
    sock.sendall(HEADER.pack(len(payload)) + payload)


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks, remaining = [], size
    while remaining:
        chunk = sock.recv(remaining)
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


class Dispatcher:
    """Routes each incoming StreamingMessage to the library's handler, as the proxy worker does."""

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        import azure_functions_runtime as library

        self.library = library
        self.sock = sock
        self.loop = loop
        self._send_lock = threading.Lock()

    def send(self, message: Any) -> None:
        with self._send_lock:
            write_frame(self.sock, message.SerializeToString())

    async def dispatch(self, message: Any) -> None:
        library = self.library
        content = message.WhichOneof("content")
        if content == "worker_init_request":
            library.start_threadpool_executor()
            response = await library.worker_init_request(
                WorkerRequest("WorkerInitRequest", message, {"protos": rpc, "host": "127.0.0.1"}))
            self.send(rpc.StreamingMessage(request_id=message.request_id, worker_init_response=response))
        elif content == "functions_metadata_request":
            response = await library.functions_metadata_request(WorkerRequest("WorkerMetadataRequest", message))
            self.send(rpc.StreamingMessage(request_id=message.request_id, function_metadata_response=response))
        elif content == "function_load_request":
            response = await library.function_load_request(WorkerRequest("FunctionLoadRequest", message))
            self.send(rpc.StreamingMessage(request_id=message.request_id, function_load_response=response))
        elif content == "invocation_request":
            response = await library.invocation_request(WorkerRequest("FunctionInvocationRequest", message))
            self.send(rpc.StreamingMessage(request_id=message.request_id, invocation_response=response))
        elif content == "worker_status_request":
            self.send(rpc.StreamingMessage(request_id=message.request_id,
                                           worker_status_response=rpc.WorkerStatusResponse()))
        else:
            logger.error("unknown StreamingMessage content type: %s", content)

    def serve(self) -> None:
        """Read frames until the host closes the connection; each request runs as its own task.

        The worker ends with its host, at once: a host that stops gracefully has no invocation in
        flight any more when it closes the channel, and one that died takes its worker with it, as
        in Azure, so nothing a dead host asked for goes on running.
        """
        try:
            while (payload := read_frame(self.sock)) is not None:
                message = rpc.StreamingMessage.FromString(payload)
                self.loop.call_soon_threadsafe(self.loop.create_task, self.dispatch(message))
        finally:
            logging.shutdown()
            os._exit(0)


class RunFormatter(logging.Formatter):
    """Log lines that name the run and step they are about (the app passes them in `extra`)."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        run_id, step = getattr(record, "run_id", None), getattr(record, "step", None)
        return f"{line} [run {run_id} step {step}]" if run_id else line


def main(argv: list[str]) -> int:
    level = os.environ.get("DEVHOST_WORKER_LOG_LEVEL", "INFO").upper()
    handler = logging.StreamHandler()
    handler.setFormatter(RunFormatter("%(asctime)s %(levelname)s worker %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    sock = socket.socket(fileno=int(argv[0]))
    sys.path.insert(0, os.getcwd())  # the host starts the worker in the app's root, which must import
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    dispatcher = Dispatcher(sock, loop)
    threading.Thread(target=dispatcher.serve, name="rpc-reader", daemon=True).start()
    loop.run_forever()  # until the reader ends the process
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
