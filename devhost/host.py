"""The local host: runs `function_app.app`'s functions from their own trigger metadata.

- HTTP triggers: served on 127.0.0.1 under `/api/<route>` (route templates like `runs/{run_id}`).
- Queue triggers: host.json `extensions.queues` semantics. Poll with exponential back-off up to
  `maxPollingInterval`; take up to `batchSize` messages; hold each invisible while it runs (the
  lease is renewed); base64-decode (a message that is not base64 goes straight to
  `<queue>-poison`); on failure make it visible again after `visibilityTimeout`, and after
  `maxDequeueCount` failed deliveries move it to `<queue>-poison`. Output bindings are sent only
  after the function succeeds, then the message is deleted (at-least-once, like the real host).
- Timer triggers: NCRONTAB (six fields, seconds first), `%SETTING%` resolved from the environment.

Development only; never deployed. See the package docstring.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest

from devhost.faults import FaultPlan, InjectedFault
from devhost.hostconfig import QueueSettings
from loadme.names import poison_queue
from loadme.storage import StorageClients

logger = logging.getLogger("devhost")
MIN_POLL_SECONDS = 0.1
DEFAULT_LEASE_SECONDS = 60


class Output(func.Out[Any]):
    """An output binding value, sent after the function succeeds."""

    def __init__(self) -> None:
        self._value: Any = None

    def set(self, val: Any) -> None:
        self._value = val

    def get(self) -> Any:
        return self._value


def resolve_setting(value: str) -> str:
    """Replace `%NAME%` with the app setting NAME, as the host does for trigger parameters."""
    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise KeyError(f"'%{name}%' does not resolve to a value (app setting {name} is missing)")
        return os.environ[name]

    return re.sub(r"%([^%]+)%", lookup, value)


class FunctionSpec:
    """One function: its user code and its bindings, from the app's own metadata."""

    def __init__(self, function: Any) -> None:
        self.name: str = function.get_function_name()
        self.code: Callable[..., Any] = function.get_user_function()
        self.bindings: list[dict[str, Any]] = [json.loads(b) for b in function.get_raw_bindings()]
        self.trigger = next(b for b in self.bindings if b["direction"] == "IN" and b["type"].endswith("Trigger"))
        self.queue_outputs = [b for b in self.bindings if b["direction"] == "OUT" and b["type"] == "queue"]

    def invoke(self, trigger_value: Any) -> tuple[Any, dict[str, Any]]:
        """Call the function; returns its return value and the queue outputs it set."""
        outputs = {b["name"]: Output() for b in self.queue_outputs}
        result = self.code(**{self.trigger["name"]: trigger_value}, **outputs)
        return result, {name: out.get() for name, out in outputs.items()}


class LocalHost:
    """Runs every function of a FunctionApp against Azurite until `stop()`."""

    def __init__(
        self,
        app: func.FunctionApp,
        storage: StorageClients,
        queue_settings: QueueSettings,
        port: int = 7071,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        duplicate_deliveries: bool = False,
        message_tap: Path | None = None,
        faults: FaultPlan | None = None,
    ) -> None:
        self.functions = [FunctionSpec(f) for f in app.get_functions()]
        self.storage = storage
        self.queue_settings = queue_settings
        self.port = port
        self.lease_seconds = lease_seconds
        # Fault injection for tests: deliver every message a second time (at-least-once, made real).
        self.duplicate_deliveries = duplicate_deliveries
        self._duplicated: set[str] = set()
        # Every decoded message body, appended to a file (tests check no secret ever travels).
        self.message_tap = message_tap
        self.faults = faults
        self._tap_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server: ThreadingHTTPServer | None = None

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Start the HTTP server, one listener per queue trigger and one thread per timer."""
        http_functions = [f for f in self.functions if f.trigger["type"] == "httpTrigger"]
        queues = [resolve_setting(f.trigger["queueName"]) for f in self.functions
                  if f.trigger["type"] == "queueTrigger"]
        self.storage.ensure_resources(queues + [poison_queue(q) for q in queues])
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler_class(self, http_functions))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._spawn(self._server.serve_forever, "http")
        for spec in self.functions:
            kind = spec.trigger["type"]
            if kind == "queueTrigger":
                self._spawn(lambda s=spec: self._listen(s), f"queue:{spec.name}")
            elif kind == "timerTrigger":
                self._spawn(lambda s=spec: self._run_timer(s), f"timer:{spec.name}")
            elif kind != "httpTrigger":
                raise ValueError(f"{spec.name}: trigger type {kind} is not supported by the local host")
        routes = ", ".join(f"{'/'.join(f.trigger['methods'])} /api/{f.trigger['route']}" for f in http_functions)
        logger.info("local host listening on http://127.0.0.1:%d (%s)", self.port, routes)
        for spec in self.functions:
            if spec.trigger["type"] == "queueTrigger":
                logger.info("queue trigger %s <- %s", spec.name, resolve_setting(spec.trigger["queueName"]))
            elif spec.trigger["type"] == "timerTrigger":
                logger.info("timer trigger %s on %r", spec.name, resolve_setting(spec.trigger["schedule"]))

    def stop(self) -> None:
        """Stop accepting work and wait for the threads (in-flight messages become visible again)."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=30)

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    # ---- queues ----------------------------------------------------------------------------
    def _listen(self, spec: FunctionSpec) -> None:
        queue_name = resolve_setting(spec.trigger["queueName"])
        client = self.storage.raw_queue(queue_name)
        settings = self.queue_settings
        delay = MIN_POLL_SECONDS
        workers = ThreadPoolExecutor(settings.batch_size, thread_name_prefix=f"fn:{spec.name}")
        in_flight: set[Any] = set()
        lock = threading.Lock()
        while not self._stop.is_set():
            with lock:
                room = settings.batch_size + settings.new_batch_threshold - len(in_flight)
            if room <= settings.new_batch_threshold:
                self._stop.wait(MIN_POLL_SECONDS)
                continue
            try:
                batch = list(client.receive_messages(
                    messages_per_page=min(settings.batch_size, 32), max_messages=min(settings.batch_size, room),
                    visibility_timeout=int(self.lease_seconds),
                ))
            except Exception as exc:  # noqa: BLE001 - a storage outage must not kill the listener
                logger.warning("%s: polling %s failed: %s", spec.name, queue_name, exc)
                batch = []
            if not batch:
                self._stop.wait(delay)
                delay = min(delay * 2, settings.max_polling_interval)
                continue
            delay = MIN_POLL_SECONDS
            for message in batch:
                with lock:
                    in_flight.add(message.id)

                def done(_: Any, message_id: str = message.id) -> None:
                    with lock:
                        in_flight.discard(message_id)

                workers.submit(self._process, spec, queue_name, message).add_done_callback(done)
        workers.shutdown(wait=True, cancel_futures=True)

    def _process(self, spec: FunctionSpec, queue_name: str, message: Any) -> None:
        client = self.storage.raw_queue(queue_name)
        settings = self.queue_settings
        try:
            body = base64.b64decode(message.content, validate=True) if settings.message_encoding == "base64" \
                else message.content.encode()
        except (binascii.Error, ValueError):
            logger.error("%s: message %s on %s is not valid base64; moving it to %s",
                         spec.name, message.id, queue_name, poison_queue(queue_name))
            self._poison(queue_name, message)
            return
        self._tap(queue_name, body)
        if self.duplicate_deliveries and message.content not in self._duplicated:
            self._duplicated.add(message.content)
            client.send_message(message.content)
        trigger = QueueMessage(
            id=message.id, body=body, dequeue_count=message.dequeue_count, pop_receipt=message.pop_receipt,
            insertion_time=message.inserted_on, expiration_time=message.expires_on,
            time_next_visible=message.next_visible_on,
        )
        lease = _LeaseRenewer(client, message, self.lease_seconds)
        try:
            if self.faults and message.dequeue_count <= self.faults.failures(queue_name, message.content):
                raise InjectedFault(f"injected transient fault (delivery {message.dequeue_count})")
            _, outputs = spec.invoke(trigger)
            self._send_outputs(spec, outputs)
        except Exception as exc:  # noqa: BLE001 - the host records every failure and retries
            lease.stop()
            logger.error("%s: message %s failed (delivery %d of %d): %s\n%s", spec.name, message.id,
                         message.dequeue_count, settings.max_dequeue_count, exc,
                         "" if isinstance(exc, InjectedFault) else traceback.format_exc())
            if message.dequeue_count >= settings.max_dequeue_count:
                logger.error("%s: moving message %s to %s", spec.name, message.id, poison_queue(queue_name))
                self._poison(queue_name, message, lease.pop_receipt)
            else:
                client.update_message(message.id, lease.pop_receipt,
                                      visibility_timeout=int(settings.visibility_timeout))
            return
        lease.stop()
        client.delete_message(message.id, lease.pop_receipt)

    def _tap(self, queue_name: str, body: bytes) -> None:
        if self.message_tap is not None:
            with self._tap_lock, open(self.message_tap, "ab") as tap:
                tap.write(queue_name.encode() + b" " + body + b"\n")

    def _send_outputs(self, spec: FunctionSpec, outputs: dict[str, Any]) -> None:
        for binding in spec.queue_outputs:
            value = outputs.get(binding["name"])
            if value is None:
                continue
            queue = self.storage.queue(resolve_setting(binding["queueName"]))
            for item in value if isinstance(value, list) else [value]:
                queue.send_message(item if isinstance(item, str) else json.dumps(item))

    def _poison(self, queue_name: str, message: Any, pop_receipt: str | None = None) -> None:
        self.storage.raw_queue(poison_queue(queue_name)).send_message(message.content)
        self.storage.raw_queue(queue_name).delete_message(message.id, pop_receipt or message.pop_receipt)

    # ---- timers ----------------------------------------------------------------------------
    def _run_timer(self, spec: FunctionSpec) -> None:
        from croniter import croniter

        fields = resolve_setting(spec.trigger["schedule"]).split()
        if len(fields) != 6:
            raise ValueError(f"{spec.name}: NCRONTAB needs six fields, got {' '.join(fields)!r}")
        schedule = croniter(" ".join(fields[1:] + fields[:1]), datetime.now(UTC))
        if spec.trigger.get("runOnStartup"):
            self._fire(spec, past_due=False)
        while not self._stop.is_set():
            due = schedule.get_next(datetime)
            if self._stop.wait(max(0.0, (due - datetime.now(UTC)).total_seconds())):
                return
            self._fire(spec, past_due=(datetime.now(UTC) - due).total_seconds() > 1)

    def _fire(self, spec: FunctionSpec, past_due: bool) -> None:
        try:
            _, outputs = spec.invoke(TimerRequest(past_due=past_due))
            self._send_outputs(spec, outputs)
        except Exception as exc:  # noqa: BLE001 - a failed timer run is logged; the schedule goes on
            logger.error("%s: timer run failed: %s\n%s", spec.name, exc, traceback.format_exc())


class _LeaseRenewer:
    """Keeps a message invisible while its function runs, as the host does for long invocations."""

    def __init__(self, client: Any, message: Any, lease_seconds: float) -> None:
        self._client, self._id, self.pop_receipt = client, message.id, message.pop_receipt
        self._lease = lease_seconds
        self._done = threading.Event()
        self._lock = threading.Lock()
        threading.Thread(target=self._renew, daemon=True).start()

    def _renew(self) -> None:
        while not self._done.wait(self._lease / 3):
            with self._lock:
                if self._done.is_set():
                    return
                try:
                    receipt = self._client.update_message(self._id, self.pop_receipt,
                                                          visibility_timeout=int(self._lease))
                    self.pop_receipt = receipt.pop_receipt
                except Exception as exc:  # noqa: BLE001 - the next renewal or the handler will tell
                    logger.warning("lease renewal of %s failed: %s", self._id, exc)

    def stop(self) -> None:
        with self._lock:
            self._done.set()


def _route_pattern(route: str) -> re.Pattern[str]:
    """`runs/{run_id}` -> a regex with a named group per parameter (constraints ignored)."""
    parts = re.split(r"(\{[^}]+\})", route.strip("/"))
    regex = ""
    for part in parts:
        if part.startswith("{"):
            name = part[1:-1].split(":")[0].rstrip("?")
            regex += f"(?P<{name}>[^/]+)"
        else:
            regex += re.escape(part)
    return re.compile(f"^{regex}$", re.IGNORECASE)


def _handler_class(host: LocalHost, functions: list[FunctionSpec]) -> type[BaseHTTPRequestHandler]:
    routes = [(_route_pattern(f.trigger["route"]), f) for f in functions]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            logger.info("http: " + format, *args)

        def _handle(self) -> None:
            parts = urlsplit(self.path)
            path = parts.path
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if not path.startswith("/api/"):
                return self._reply(404, {"Content-Type": "application/json"}, b'{"error": "not found"}')
            matched = [(m, f) for p, f in routes if (m := p.match(path[len("/api/"):]))]
            allowed = [(m, f) for m, f in matched if self.command in f.trigger["methods"]]
            if not allowed:
                status = 405 if matched else 404
                return self._reply(status, {"Content-Type": "application/json"},
                                   json.dumps({"error": "method not allowed" if matched else "not found"}).encode())
            match, spec = allowed[0]
            request = func.HttpRequest(
                method=self.command, url=f"http://{self.headers.get('Host', '127.0.0.1')}{self.path}",
                headers=dict(self.headers.items()), params=dict(parse_qsl(parts.query)),
                route_params=match.groupdict(), body=body,
            )
            try:
                response, outputs = spec.invoke(request)
                host._send_outputs(spec, outputs)
            except Exception as exc:  # noqa: BLE001 - as the real host: an unhandled error is a 500
                logger.error("%s failed: %s\n%s", spec.name, exc, traceback.format_exc())
                return self._reply(500, {}, b"")
            headers = dict(response.headers.items())
            headers.setdefault("Content-Type", response.mimetype or "text/plain")
            self._reply(response.status_code, headers, response.get_body() or b"")

        def _reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for key, value in headers.items():
                if key.lower() != "content-length":
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

    return Handler
