"""The Functions app (Python v2 model): triggers and bindings only.

Each function decodes its binding, calls `loadme`, and maps the outcome to a response or an
output binding. Queue messages are envelope JSON; the host base64-encodes them on the queues.

Cold start: the worker imports this file to index the functions, so at the top it imports only
what the decorators need (queue names, the settings table for trigger parameters, the errors it
catches); each function imports the `loadme` modules it uses when it first runs (`make bench`
measures the import against bare `azure.functions`).
"""

from __future__ import annotations

import logging
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import azure.functions as func

from loadme.context import configure_logging, get_context
from loadme.errors import EnvelopeError, RequestError
from loadme.loading import load_all
from loadme.names import (
    INITJOB_QUEUE,
    REMOVEINFRA_QUEUE,
    STAGE2_QUEUE,
    is_run_id,
    run_id_for_idempotency_key,
)
from loadme.settings import binding_schedule, is_set, value
from loadme.web import API_HEADERS, JSON, Answer, answer, error_text, json_answer, slow_read

if TYPE_CHECKING:
    from loadme.envelope import Message, RemovalMessage, ResultMessage, StepMessage

CONNECTION = "AzureWebJobsStorage"
logger = logging.getLogger("loadme.functions")
configure_logging()

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

# Every queue output binding takes a list of message texts, even for one message: the host writes
# each list element exactly as given, but re-parses a single string that looks like JSON and
# rewrites it (indented, timestamps and numbers reformatted by Json.NET: Azure/azure-functions-host
# FunctionBinding.ReadAsEnumerable, #9581), which would change the variables in our envelope.
# `typing.List`, not `list`: the Functions Python worker refuses `Out[list[str]]` at indexing
# ("invalid non-type annotation"; its vendored typing_inspect does not see `list[str]` as generic,
# Azure/azure-functions-python-worker#1176), and one refused function fails the whole app.
# tests/test_worker_conformance.py guards both.
Messages = func.Out[typing.List[str]]  # noqa: UP006


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return _response(json_answer(status, body, headers))


def _response(answer: Answer) -> func.HttpResponse:
    return func.HttpResponse(answer.text, status_code=answer.status, mimetype=JSON, headers=answer.headers)


def _api_base(req: func.HttpRequest) -> str:
    parts = urlsplit(req.url)
    return f"{parts.scheme}://{parts.netloc}/api"


def _decode(msg: func.QueueMessage, kind: type[Any], queue: str) -> Any:
    """Decode a queue message; a malformed one is logged with the reason and raised (-> poison)."""
    from loadme.envelope import decode

    try:
        return decode(msg.get_body(), kind)
    except EnvelopeError as exc:
        logger.error("malformed message %s on %s (dequeue count %s): %s",
                     msg.id, queue, getattr(msg, "dequeue_count", "?"), exc)
        raise


def _answer(what: str, handle: Callable[[], Answer | tuple[int, Any]]) -> func.HttpResponse:
    """Run a request's handler: its status and JSON body, or a JSON error (loadme.web.answer)."""
    return _response(answer(handle, what))


def _found(run_id: str, body: Any) -> tuple[int, Any]:
    if body is None:
        raise RequestError(404, f"no run with id {run_id!r}")
    return 200, body


def _send(out: Messages, messages: list[Message]) -> None:
    if messages:
        out.set([m.to_json() for m in messages])


@app.function_name("init_job")
@app.route(route="init_job", methods=["POST"])
@app.queue_output(arg_name="initjob", queue_name=INITJOB_QUEUE, connection=CONNECTION)
def init_job(req: func.HttpRequest, initjob: Messages) -> func.HttpResponse:
    """Start a run: 202 with its id and status URL, or a 4xx JSON error naming the problem."""
    load_all()
    from loadme.api import check_idempotency_key, parse_start_request
    from loadme.runs import start_run

    def handle() -> Answer:
        ctx = get_context()
        key = check_idempotency_key(req.headers.get("Idempotency-Key"))
        request = parse_start_request(req.get_body(), req.headers.get("Content-Type"), ctx.settings, ctx.variables)
        started = start_run(ctx, request, "http", run_id_for_idempotency_key(key) if key else None)
        _send(initjob, [started.message] if started.message is not None else [])
        status_url = f"{_api_base(req)}/runs/{started.run_id}"
        return json_answer(202, {"run_id": started.run_id, "status_url": status_url}, {"Location": status_url})

    return _answer("init_job", handle)


@app.function_name("run_status")
@app.route(route="runs/{run_id}", methods=["GET"])
def run_status(req: func.HttpRequest) -> func.HttpResponse:
    """A run's state, timeline and variables; 404 for an unknown run."""
    load_all()
    from loadme.runs import run_status as read_run_status

    run_id = req.route_params.get("run_id", "")
    return _answer("run_status", lambda: _found(run_id, read_run_status(get_context(), run_id)
                                                if is_run_id(run_id) else None))


@app.function_name("cancel_run")
@app.route(route="runs/{run_id}", methods=["DELETE"])
@app.queue_output(arg_name="removeinfra", queue_name=REMOVEINFRA_QUEUE, connection=CONNECTION)
def cancel_run(req: func.HttpRequest, removeinfra: Messages) -> func.HttpResponse:
    """Cancel a run and remove its containers: 202 (also when already cancelled), 404, or 409."""
    load_all()
    from loadme.cancel import cancel_run as cancel

    run_id = req.route_params.get("run_id", "")

    def handle() -> tuple[int, Any]:
        outcome = cancel(get_context(), run_id) if is_run_id(run_id) else None
        if outcome is None or not outcome.found:
            raise RequestError(404, f"no run with id {run_id!r}")
        _send(removeinfra, list(outcome.removals))
        if outcome.conflict:
            raise RequestError(409, f"run {run_id} already {outcome.state}; it cannot be cancelled")
        return 202, {"run_id": run_id, "state": outcome.state, "status_url": f"{_api_base(req)}/runs/{run_id}"}

    return _answer("cancel_run", handle)


@app.function_name("list_runs")
@app.route(route="runs", methods=["GET"])
def list_runs(req: func.HttpRequest) -> func.HttpResponse:
    """Runs newest first: `state`, `since`, `until` (ISO 8601), `limit`, `cursor` (from `next_cursor`)."""
    load_all()
    from loadme import reports

    def handle() -> tuple[int, Any]:
        with slow_read("run listing"):
            return 200, reports.list_runs(get_context(), req.params)

    return _answer("list_runs", handle)


@app.function_name("run_logs")
@app.route(route="runs/{run_id}/logs", methods=["GET"])
def run_logs(req: func.HttpRequest) -> func.HttpResponse:
    """Each step's archived log, or the live one while it runs (`step`, `tail` lines); 404 if unknown."""
    load_all()
    from loadme import reports

    run_id = req.route_params.get("run_id", "")

    def handle() -> tuple[int, Any]:
        with slow_read("log"):
            return _found(run_id, reports.run_logs(get_context(), run_id, req.params) if is_run_id(run_id) else None)

    return _answer("run_logs", handle)


@app.function_name("run_stats")
@app.route(route="stats", methods=["GET"])
def run_stats(req: func.HttpRequest) -> func.HttpResponse:
    """Runs per day by state, success rate and duration p50/p95 over the last `days` days."""
    load_all()
    from loadme import reports

    def handle() -> tuple[int, Any]:
        with slow_read("stats"):
            return 200, reports.run_stats(get_context(), req.params)

    return _answer("run_stats", handle)


@app.function_name("poison_list")
@app.route(route="poison/{queue}", methods=["GET"])
def poison_list(req: func.HttpRequest) -> func.HttpResponse:
    """The messages in `<queue>-poison`, each with its run, error and age."""
    load_all()
    from loadme import poison

    return _answer("poison_list", lambda: (200, poison.list_poison(get_context(), req.route_params.get("queue", ""))))


@app.function_name("poison_requeue")
@app.route(route="poison/{queue}/{message_id}/requeue", methods=["POST"])
def poison_requeue(req: func.HttpRequest) -> func.HttpResponse:
    """Put a poisoned message back on its queue (idempotent); 404 if unknown, 409 if it was dropped."""
    load_all()
    from loadme import poison

    queue, message_id = req.route_params.get("queue", ""), req.route_params.get("message_id", "")
    return _answer("poison_requeue", lambda: (200, poison.requeue(get_context(), queue, message_id)))


@app.function_name("poison_drop")
@app.route(route="poison/{queue}/{message_id}", methods=["DELETE"])
def poison_drop(req: func.HttpRequest) -> func.HttpResponse:
    """Delete a poisoned message (idempotent); its run ends failed; 404 if unknown, 409 if requeued."""
    load_all()
    from loadme import poison

    queue, message_id = req.route_params.get("queue", ""), req.route_params.get("message_id", "")
    return _answer("poison_drop", lambda: (200, poison.drop(get_context(), queue, message_id)))


@app.function_name("service_status")
@app.route(route="status", methods=["GET"])
def service_status(req: func.HttpRequest) -> func.HttpResponse:
    """Depth and oldest-message age of each poison queue."""
    load_all()
    from loadme.poison import poison_stats

    return _answer("service_status", lambda: (200, {"poison_queues": {p.queue: p.as_dict()
                                                                      for p in poison_stats(get_context())}}))


@app.function_name("dashboard")
@app.route(route="dashboard/{*path}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def dashboard(req: func.HttpRequest) -> func.HttpResponse:
    """The web dashboard's files (anonymous: the page holds no data and asks for the function key)."""
    load_all()
    from loadme.static import SECURITY_HEADERS, dashboard_file

    found = dashboard_file(req.route_params.get("path") or "")
    if found is None:
        return _json(404, error_text("no such dashboard file"))
    return func.HttpResponse(found.body, status_code=200, headers={"Content-Type": found.content_type,
                                                                   **API_HEADERS, **SECURITY_HEADERS})


@app.function_name("openapi")
@app.route(route="openapi.json", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def openapi(req: func.HttpRequest) -> func.HttpResponse:
    """The OpenAPI 3 document of this API."""
    load_all()
    from loadme.openapi import openapi_document

    return _answer("openapi", lambda: (200, openapi_document(value("VARIABLE_PREFIX"))))


@app.function_name("dq_init_job")
@app.queue_trigger(arg_name="msg", queue_name=INITJOB_QUEUE, connection=CONNECTION)
@app.queue_output(arg_name="removeinfra", queue_name=REMOVEINFRA_QUEUE, connection=CONNECTION)
def dq_init_job(msg: func.QueueMessage, removeinfra: Messages) -> None:
    """Deploy the step's container group (idempotent)."""
    load_all()
    from loadme.deploy import deploy_step
    from loadme.envelope import StepMessage
    from loadme.failures import failures_noted

    step: StepMessage = _decode(msg, StepMessage, INITJOB_QUEUE)
    with failures_noted(INITJOB_QUEUE, step, msg.dequeue_count):
        _send(removeinfra, list(deploy_step(get_context(), step)))


@app.function_name("stage2")
@app.queue_trigger(arg_name="msg", queue_name=STAGE2_QUEUE, connection=CONNECTION)
@app.queue_output(arg_name="initjob", queue_name=INITJOB_QUEUE, connection=CONNECTION)
@app.queue_output(arg_name="removeinfra", queue_name=REMOVEINFRA_QUEUE, connection=CONNECTION)
def stage2(msg: func.QueueMessage, initjob: Messages, removeinfra: Messages) -> None:
    """Accept a container's result; send the next step or finish, and the removal."""
    load_all()
    from loadme.envelope import ResultMessage
    from loadme.failures import failures_noted
    from loadme.results import accept_result

    result: ResultMessage = _decode(msg, ResultMessage, STAGE2_QUEUE)
    with failures_noted(STAGE2_QUEUE, result, msg.dequeue_count):
        follow = accept_result(get_context(), result)
    _send(initjob, list(follow.next_steps))
    _send(removeinfra, list(follow.removals))


@app.function_name("remove_infra")
@app.queue_trigger(arg_name="msg", queue_name=REMOVEINFRA_QUEUE, connection=CONNECTION)
def remove_infra(msg: func.QueueMessage) -> None:
    """Archive the step's logs and delete its container group (idempotent)."""
    load_all()
    from loadme.cleanup import remove_step
    from loadme.envelope import RemovalMessage
    from loadme.failures import failures_noted

    removal: RemovalMessage = _decode(msg, RemovalMessage, REMOVEINFRA_QUEUE)
    with failures_noted(REMOVEINFRA_QUEUE, removal, msg.dequeue_count):
        remove_step(get_context(), removal)


@app.function_name("janitor")
@app.timer_trigger(
    arg_name="timer",
    schedule=binding_schedule("JANITOR_SCHEDULE"),
    use_monitor=True,
)
@app.queue_output(arg_name="removeinfra", queue_name=REMOVEINFRA_QUEUE, connection=CONNECTION)
def janitor(timer: func.TimerRequest, removeinfra: Messages) -> None:
    """Time out, fail and remove what the normal flow could not finish; report poison queues."""
    load_all()
    from loadme.janitor import sweep

    report = sweep(get_context())
    _send(removeinfra, list(report.removals))


# The timer exists only when a schedule is configured (changing app settings restarts the app).
if is_set("SCHEDULED_INIT_SCHEDULE"):

    @app.function_name("scheduled_init")
    @app.timer_trigger(arg_name="timer", schedule=binding_schedule("SCHEDULED_INIT_SCHEDULE"), use_monitor=True)
    @app.queue_output(arg_name="initjob", queue_name=INITJOB_QUEUE, connection=CONNECTION)
    def scheduled_init(timer: func.TimerRequest, initjob: Messages) -> None:
        """Start a run exactly as `init_job` does, with SCHEDULED_INIT_VARIABLES and SCHEDULED_INIT_SECRETS."""
        load_all()
        from loadme.api import start_request_from_object
        from loadme.runs import start_run

        ctx = get_context()
        request = start_request_from_object(
            {"variables": ctx.settings.scheduled_variables, "secrets": list(ctx.settings.scheduled_secrets)},
            ctx.settings, ctx.variables
        )
        started = start_run(ctx, request, "timer")
        _send(initjob, [started.message] if started.message is not None else [])
        logger.info("scheduled run %s started%s", started.run_id, " (past due)" if timer.past_due else "")
