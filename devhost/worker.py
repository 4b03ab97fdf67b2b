"""The host's side of the language worker: start it, index the app through it, send invocations.

Follows the Functions host's worker channel (Azure/azure-functions-host,
`src/WebJobs.Script.Grpc/Channel/GrpcWorkerChannel.cs`): start the worker process in the app's
root with the app settings as its environment; send `WorkerInitRequest`, then
`FunctionsMetadataRequest` (worker indexing), keep the worker's `function_id`s and send one
`FunctionLoadRequest` per function (the Python worker does not declare
SupportsLoadResponseCollection); then `InvocationRequest`s, each answered by an
`InvocationResponse` with the same invocation id. A worker that fails to initialise or index stops
the host with the worker's own message. On a function timeout the host restarts the worker process
(`WebScriptHostExceptionHandler.OnTimeoutExceptionAsync`): `restart()`.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devhost import rpc
from devhost.worker_process import read_frame, write_frame

logger = logging.getLogger("devhost.worker")
HOST_VERSION = "4.1042.0"  # the Functions host version whose channel this follows
START_TIMEOUT_SECONDS = 120.0


class WorkerRefused(RuntimeError):
    """The worker failed to initialise or index the app; the message is the worker's own."""


class WorkerExited(RuntimeError):
    """The worker process ended (or was restarted) while an invocation was in flight."""


@dataclass(frozen=True)
class IndexedFunction:
    """A function as the worker reported it: name, id and bindings (the decorators' raw JSON)."""

    name: str
    function_id: str
    bindings: tuple[dict[str, Any], ...]

    @property
    def trigger(self) -> dict[str, Any]:
        return next(b for b in self.bindings if b["direction"].lower() == "in" and b["type"].endswith("Trigger"))

    @property
    def outputs(self) -> tuple[dict[str, Any], ...]:
        return tuple(b for b in self.bindings if b["direction"].lower() == "out")


def _failure(result: Any) -> str:
    exception = result.exception
    text = str(exception.message or "unknown error")
    return f"{text}\n{exception.stack_trace}" if exception.stack_trace else text


class WorkerChannel:
    """One language worker process for one function app."""

    def __init__(self, app_dir: Path, environ: Mapping[str, str]) -> None:
        self.app_dir = app_dir.resolve()
        self.environ = dict(environ)
        self.functions: dict[str, IndexedFunction] = {}
        self.capabilities: dict[str, str] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._pending: dict[str, Future[Any]] = {}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        """The worker process's id while it runs (`make bench` reads its CPU time)."""
        return self._process.pid if self._process is not None and self._process.poll() is None else None

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> list[IndexedFunction]:
        """Start the worker and index the app. Raises WorkerRefused with the worker's message."""
        host_end, worker_end = socket.socketpair()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "devhost.worker_process", str(worker_end.fileno())],
            cwd=self.app_dir, env={**self.environ, "PYTHONPATH": _pythonpath(self.environ)},
            pass_fds=(worker_end.fileno(),), stdin=subprocess.DEVNULL,
        )
        worker_end.close()
        self._sock = host_end
        threading.Thread(target=self._read, args=(host_end,), name="worker-reader", daemon=True).start()
        init = self._request("worker_init_request", rpc.WorkerInitRequest(
            host_version=HOST_VERSION, function_app_directory=str(self.app_dir), worker_directory=str(self.app_dir)))
        if init.result.status != rpc.StatusResult.Success:
            raise WorkerRefused(_failure(init.result))
        self.capabilities = dict(init.capabilities)
        metadata = self._request("functions_metadata_request",
                                 rpc.FunctionsMetadataRequest(function_app_directory=str(self.app_dir)))
        if metadata.result.status != rpc.StatusResult.Success:
            raise WorkerRefused(_failure(metadata.result))
        functions = {}
        for meta in metadata.function_metadata_results:
            loaded = self._request("function_load_request",
                                   rpc.FunctionLoadRequest(function_id=meta.function_id, metadata=meta))
            if loaded.result.status != rpc.StatusResult.Success:
                raise WorkerRefused(f"{meta.name}: {_failure(loaded.result)}")
            functions[meta.name] = IndexedFunction(
                meta.name, meta.function_id, tuple(json.loads(raw) for raw in meta.raw_bindings))
        self.functions = functions
        return list(functions.values())

    def stop(self) -> None:
        """Close the channel; the worker finishes its invocations in flight and exits."""
        process, sock = self._process, self._sock
        if sock is not None:
            sock.shutdown(socket.SHUT_WR)
        if process is not None:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if sock is not None:
            sock.close()
        self._fail_pending("the worker was stopped")

    def restart(self, reason: str) -> None:
        """Kill the worker process and start a new one (the host's answer to a function timeout)."""
        logger.warning("%s. Restarting worker process.", reason)
        if self._process is not None:
            self._process.kill()
            self._process.wait()
        if self._sock is not None:
            self._sock.close()
        self._fail_pending(f"the worker process was restarted: {reason}")
        self.start()
        logger.info("Restart of language worker process completed.")

    # ---- invocations -----------------------------------------------------------------------
    def invoke(self, function: IndexedFunction, input_data: list[Any], trigger_metadata: dict[str, Any],
               retry_count: int = 0, max_retry_count: int = 0) -> tuple[str, Future[Any]]:
        """Send an InvocationRequest; returns its id and a future of the InvocationResponse."""
        invocation_id = str(uuid.uuid4())
        request = rpc.InvocationRequest(
            invocation_id=invocation_id, function_id=function.function_id, input_data=input_data,
            trigger_metadata=trigger_metadata, trace_context=rpc.RpcTraceContext(),
            retry_context=rpc.RetryContext(retry_count=retry_count, max_retry_count=max_retry_count))
        return invocation_id, self._send("invocation_request", request, key=invocation_id)

    # ---- the stream ------------------------------------------------------------------------
    def _request(self, kind: str, payload: Any) -> Any:
        return self._send(kind, payload, key=None).result(timeout=START_TIMEOUT_SECONDS)

    def _send(self, kind: str, payload: Any, key: str | None) -> Future[Any]:
        request_id = str(uuid.uuid4())
        future: Future[Any] = Future()
        with self._lock:
            self._pending[key or request_id] = future
        message = rpc.StreamingMessage(request_id=request_id, **{kind: payload})
        sock = self._sock
        if sock is None:
            raise WorkerExited("the worker is not running")
        try:
            with self._send_lock:
                write_frame(sock, message.SerializeToString())
        except OSError as exc:
            with self._lock:
                self._pending.pop(key or request_id, None)
            raise WorkerExited(f"the worker process is gone: {exc}") from exc
        return future

    def _read(self, sock: socket.socket) -> None:
        try:
            while (payload := read_frame(sock)) is not None:
                message = rpc.StreamingMessage.FromString(payload)
                content = message.WhichOneof("content")
                body = getattr(message, content)
                key = body.invocation_id if content == "invocation_response" else message.request_id
                with self._lock:
                    future = self._pending.pop(key, None)
                if future is not None:
                    future.set_result(body)
        except OSError as exc:  # the socket was closed by stop() or restart()
            logger.debug("worker channel closed: %s", exc)
        if sock is self._sock:
            self._fail_pending("the worker process exited")

    def _fail_pending(self, reason: str) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(WorkerExited(reason))


def _pythonpath(environ: Mapping[str, str]) -> str:
    """The worker imports devhost (its dispatcher) from this checkout, then the app from its root."""
    here = str(Path(__file__).resolve().parents[1])
    existing = environ.get("PYTHONPATH", "")
    return f"{here}:{existing}" if existing else here
