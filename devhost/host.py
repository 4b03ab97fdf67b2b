"""The local host: the .NET Functions host's part, around Azure's own Python worker library.

What is Azure's code here and what is ours:
- Azure's: indexing `function_app.py`, refusing functions it cannot load, turning trigger data into
  the function's arguments, running the function on the worker's thread pool, and turning `Out`
  values and return values into protocol data: the pinned `azure-functions-runtime`, in its own
  process as in Azure (`worker_process`), fed FunctionRpc messages (`rpc`).
- Ours, imitating the host and its extensions (each module cites its sources): the worker channel
  (`worker`), HTTP routing (`http_front`), queue listening, leases, retries and poison (`queues`),
  timers (`timers`), the conversion between the outside world and protocol data (`bindings`,
  `newtonsoft`), and `functionTimeout` with the worker restart (here).

Development only; never deployed.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import threading
from collections.abc import Mapping
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

from devhost import bindings, rpc
from devhost.faults import DeliveryFaults
from devhost.hostconfig import HostSettings
from devhost.http_front import ANY_METHOD, HttpFront, HttpReply, HttpRoute, IncomingRequest
from devhost.queues import DEFAULT_LEASE_SECONDS, QueueListener
from devhost.timers import TimerSchedule
from devhost.worker import IndexedFunction, WorkerChannel, WorkerExited

logger = logging.getLogger("devhost")
# TimeoutAttribute.GracePeriod: how long the host waits after a timeout before restarting the worker.
TIMEOUT_GRACE_SECONDS = 2.0


class InvocationFailed(RuntimeError):
    """The worker reported the invocation failed (the message is its exception), or it timed out."""


def resolve_setting(value: str, environ: Mapping[str, str]) -> str:
    """Replace `%NAME%` with app setting NAME, as the host does in binding properties.

    Raises KeyError naming a missing setting.
    """
    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise KeyError(f"'%{name}%' does not resolve to a value (app setting {name} is missing)")
        return environ[name]

    return re.sub(r"%([^%]+)%", lookup, value)


def queue_service(connection: str, environ: Mapping[str, str]) -> Any:
    """The queue service for a binding's `connection` app setting (a connection string).

    Raises KeyError when the setting is missing.
    """
    from azure.storage.queue import QueueServiceClient

    from loadme.storage import DEV_CONNECTION

    value = environ.get(connection, "")
    if not value:
        raise KeyError(f"app setting {connection!r} (a binding's connection) is missing; the local host "
                       "needs a storage connection string there")
    if value.replace(" ", "").lower().rstrip(";") == "usedevelopmentstorage=true":
        value = DEV_CONNECTION
    return QueueServiceClient.from_connection_string(value)


class LocalHost:
    """Runs one function app until `stop()`."""

    def __init__(
        self,
        app_dir: Path,
        settings: HostSettings,
        port: int = 7071,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        faults: DeliveryFaults | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.app_dir = app_dir
        self.settings = settings
        self.port = port
        self.lease_seconds = lease_seconds
        self.faults = faults or DeliveryFaults()
        self.environ = dict(os.environ if environ is None else environ)
        self.worker = WorkerChannel(app_dir, self.environ)
        self.functions: list[IndexedFunction] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._http: HttpFront | None = None
        self._services: dict[str, Any] = {}
        self._listeners: dict[str, QueueListener] = {}
        self._restart_lock = threading.Lock()

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker (it indexes the app), then serve HTTP, listen to queues and run timers.

        Raises WorkerRefused (with the worker's message) when the worker cannot load the app.
        """
        self.functions = self.worker.start()
        routes, timers = [], []
        for function in self.functions:
            trigger = function.trigger
            kind = trigger["type"]
            if kind == "httpTrigger":
                # No `methods` means every method (WebScriptHostHttpRoutesManager adds no constraint).
                methods = tuple(m.upper() for m in trigger.get("methods") or ()) or ANY_METHOD
                routes.append(HttpRoute(function, trigger.get("route") or function.name, methods))
            elif kind == "queueTrigger":
                listener = self._queue_listener(function)
                self._listeners[listener.queue_name] = listener
            elif kind == "timerTrigger":
                timers.append(self._timer(function))
            else:
                raise ValueError(f"{function.name}: trigger type {kind} is not supported by the local host")
        self._http = HttpFront(routes, self._dispatch_http, self.port,
                               homepage=self.environ.get("AzureWebJobsDisableHomepage", "").lower() != "true")
        self._http.start()
        self.port = self._http.port
        for listener in self._listeners.values():
            self._spawn(listener.run, f"queue:{listener.function_name}")
            logger.info("queue trigger %s <- %s", listener.function_name, listener.queue_name)
        for timer in timers:
            self._spawn(timer.run, f"timer:{timer.function_name}")
            logger.info("timer trigger %s on %r", timer.function_name, timer.expression)
        logger.info("local host listening on http://127.0.0.1:%d (%s)", self.port,
                    ", ".join(f"{'/'.join(r.methods)} /api/{r.template}" for r in routes))

    def stop(self) -> None:
        """Stop taking work, let invocations in flight finish, stop the worker."""
        self._stop.set()
        for listener in self._listeners.values():
            listener.notify()
        if self._http is not None:
            self._http.stop()
        for thread in self._threads:
            thread.join(timeout=60)
        self.worker.stop()

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    # ---- invocations -----------------------------------------------------------------------
    def invoke(self, function: IndexedFunction, trigger: bindings.TriggerInput, retry_count: int = 0) -> Any:
        """Invoke through the worker, then write the output bindings; returns the InvocationResponse.

        Raises InvocationFailed when the function failed or ran past `functionTimeout` (then, as the
        host does, the worker process is restarted), or when an output could not be written.
        """
        invocation_id, future = self.worker.invoke(function, trigger.input_data, trigger.trigger_metadata,
                                                   retry_count)
        timeout = self.settings.function_timeout
        try:
            response = future.result(timeout=timeout)
        except FutureTimeout:
            logger.error("Timeout value of %s exceeded by function 'Functions.%s' (Id: '%s'). Initiating "
                         "cancellation.", _timespan(timeout), function.name, invocation_id)
            self._after_timeout(future, invocation_id)
            raise InvocationFailed(f"Timeout value of {_timespan(timeout)} was exceeded by function: "
                                   f"Functions.{function.name}") from None
        except WorkerExited as exc:
            raise InvocationFailed(f"Functions.{function.name}: {exc}") from exc
        if response.result.status != rpc.StatusResult.Success:
            raise InvocationFailed(f"Exception while executing function: Functions.{function.name}: "
                                   f"{response.result.exception.message}")
        self._write_outputs(function, response)
        return response

    def _after_timeout(self, future: Any, invocation_id: str) -> None:
        """WebScriptHostExceptionHandler.OnTimeoutExceptionAsync: a grace period, then a worker restart."""
        try:
            future.result(timeout=TIMEOUT_GRACE_SECONDS)
        except (FutureTimeout, WorkerExited):
            with self._restart_lock:
                if not future.done():
                    self.worker.restart(f"A function timeout has occurred (invocation {invocation_id})")

    def _write_outputs(self, function: IndexedFunction, response: Any) -> None:
        values = {binding.name: binding.data for binding in response.output_data}
        for binding in function.outputs:
            if binding["type"] != "queue" or binding["name"] not in values:
                continue
            queue = resolve_setting(binding["queueName"], self.environ).lower()
            client = self._queue_client(binding.get("connection") or "AzureWebJobsStorage", queue)
            for body in bindings.queue_messages(values[binding["name"]]):
                _add_creating_queue(client, self._encode(body))
            if queue in self._listeners:  # SharedQueueWatcher: a same-host write wakes the listener
                self._listeners[queue].notify()

    def _encode(self, body: bytes) -> str:
        if self.settings.queues.message_encoding == "base64":
            return base64.b64encode(body).decode("ascii")
        return body.decode("utf-8")

    def _queue_client(self, connection: str, queue: str) -> Any:
        service = self._services.get(connection)
        if service is None:
            service = self._services[connection] = queue_service(connection, self.environ)
        return service.get_queue_client(queue)

    # ---- triggers --------------------------------------------------------------------------
    def _dispatch_http(self, route: HttpRoute, request: IncomingRequest) -> HttpReply:
        function: IndexedFunction = route.function
        try:
            response = self.invoke(function, bindings.http_trigger(function.trigger["name"], request))
        except InvocationFailed as exc:  # ExceptionMiddleware: 500, empty body
            logger.error("%s", exc)
            return HttpReply(500, {}, b"")
        return bindings.http_reply(response.return_value)

    def _queue_listener(self, function: IndexedFunction) -> QueueListener:
        trigger = function.trigger
        queue = resolve_setting(trigger["queueName"], self.environ).lower()
        connection = trigger.get("connection") or "AzureWebJobsStorage"

        def invoke(message: Any, body: bytes) -> None:
            self.invoke(function, bindings.queue_trigger(trigger["name"], message, body),
                        retry_count=message.dequeue_count - 1)

        return QueueListener(
            function.name, queue, self._queue_client(connection, queue),
            self._queue_client(connection, f"{queue}-poison"), self.settings.queues, invoke, self._stop,
            self.lease_seconds, self.faults)

    def _timer(self, function: IndexedFunction) -> TimerSchedule:
        trigger = function.trigger
        expression = resolve_setting(trigger["schedule"], self.environ)

        def fire(past_due: bool, status: dict[str, str] | None) -> None:
            self.invoke(function, bindings.timer_trigger(trigger["name"], past_due, status))

        return TimerSchedule(function.name, expression, bool(trigger.get("runOnStartup")),
                             bool(trigger.get("useMonitor", True)), fire, self._stop)

    def queues(self) -> list[str]:
        """Every queue a trigger of the app listens to (after `start`)."""
        return list(self._listeners)


def _add_creating_queue(client: Any, text: str) -> None:
    """AddMessageAndCreateIfNotExistsAsync: the output queue is created when it is missing."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        client.send_message(text)
    except ResourceNotFoundError:
        client.create_queue()
        client.send_message(text)


def _timespan(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"
