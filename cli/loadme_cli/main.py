"""`loadme`: the command line of the loadme API (console script `loadme = loadme_cli.main:main`).

Every command is one or a few HTTP calls (loadme_cli.client); what it prints for people comes from
loadme_cli.render, and `--json` prints the API's own document. Every failure is one line on stderr
(`loadme: ...`) with a documented exit status, never a traceback: `LoadmeGroup` is the one place
that turns them into that.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NoReturn

import click

from loadme_cli import render
from loadme_cli.client import (
    DEFAULT_URL,
    EXIT_INTERRUPTED,
    EXIT_RUN_FAILED,
    EXIT_USAGE,
    Api,
    CliError,
    auth_headers,
    az_token,
    clear_text,
    normalize_url,
)
from loadme_cli.times import to_timestamp

QUEUES = ("initjob", "stage2", "removeinfra")
WAIT_POLL_SECONDS = 1.0
FOLLOW_POLL_SECONDS = 2.0  # a live log is one platform call (ARM for ACI) per poll: not faster than this
FOLLOW_CLEANUP_GRACE_SECONDS = 60.0  # after the run ends, how long --follow waits for the archived logs
EXIT_INTERNAL = 70

EPILOG = """\b
Exit status:
  0    done; with --wait: the run succeeded
  1    with --wait: the run failed, timed out or was cancelled
  2    usage error (a bad option or value)
  3    cannot reach the API (nothing listening, unknown host, timeout, TLS)
  4    the API refused: an error answer (unknown run, bad variable, 401/403) or no token from az
  130  interrupted (Ctrl-C); a run being waited for goes on

\b
Where: the local stack (make dev) by default; Azure with --url/LOADME_URL and a function key
(LOADME_KEY or --key, sent as x-functions-key) and, where Microsoft Entra ID protects the app,
a token (LOADME_TOKEN or --token, or --az-login with --resource/LOADME_RESOURCE, the app id
URI), sent as Authorization: Bearer. Set keys in the environment, not on the command line
(shell history, ps). A key or token goes over plain http only to this machine (127.0.0.1,
localhost, ::1); elsewhere https, or --allow-http.
"""


def _one_line(message: str) -> str:
    return " ".join(message.split())


class LoadmeGroup(click.Group):
    """A group whose failures are one line on stderr with the documented exit status."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as exc:
            _usage_failure(exc)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort, click.exceptions.NoArgsIsHelpError):
            raise
        except click.UsageError as exc:
            _usage_failure(exc)
        except CliError as exc:
            _fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", EXIT_INTERRUPTED)
        except Exception as exc:  # the promise: one line, never a traceback
            if os.environ.get("LOADME_DEBUG"):
                raise
            _fail(f"unexpected {type(exc).__name__}: {exc} (LOADME_DEBUG=1 shows where)", EXIT_INTERNAL)


def _echo(text: str, err: bool = False, nl: bool = True) -> None:
    """Print for people: control characters the API's text may carry (a job writes its logs, variables,
    reasons) are shown, not sent to the terminal (render.printable). --json output is JSON-escaped."""
    click.echo(render.printable(text), err=err, nl=nl)


def _fail(message: str, code: int) -> NoReturn:
    _echo(f"loadme: {_one_line(message)}", err=True)
    raise click.exceptions.Exit(code)


def _usage_failure(exc: click.UsageError) -> NoReturn:
    path = exc.ctx.command_path if exc.ctx is not None else "loadme"
    _fail(f"{exc.format_message()} (see '{path} --help')", EXIT_USAGE)


@dataclass
class Target:
    """Where the API is and how to sign in; the Api is built on first use (--az-login calls az then)."""

    url: str
    key: str | None
    token: str | None
    az_login: bool
    resource: str | None
    allow_http: bool = False
    _api: Api | None = field(default=None, repr=False)

    def api(self) -> Api:
        """The Api; raises CliError (usage) before any credential would go to another host over http."""
        if self._api is None:
            url = normalize_url(self.url)
            if (self.key or self.token or self.az_login) and clear_text(url):
                if not self.allow_http:
                    raise CliError(f"{url} is plain http to another host: the key or token would cross the network "
                                   "in clear text; use https (or --allow-http if you must)", EXIT_USAGE)
                _echo(f"loadme: warning: sending credentials in clear text to {url} (--allow-http)", err=True)
            token = az_token(self.resource or "") if self.az_login else self.token
            self._api = Api(url, auth_headers(self.key, token))
        return self._api


def _api(ctx: click.Context) -> Api:
    target = ctx.find_object(Target)
    assert target is not None, "the loadme group sets the target"
    return target.api()


def _print_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2))


def _print_lines(lines: list[str]) -> None:
    _echo("\n".join(lines))


json_option = click.option("--json", "as_json", is_flag=True, help="Print the API's JSON document instead.")


@click.group(cls=LoadmeGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"],
                                                               "max_content_width": 100})
@click.option("--url", envvar="LOADME_URL", show_envvar=True, default=DEFAULT_URL, show_default=True,
              help="The API's base URL (an app's root gets /api added).")
@click.option("--key", envvar="LOADME_KEY", show_envvar=True,
              help="A function key (sent as x-functions-key). Prefer LOADME_KEY: a --key value is kept in shell "
                   "history and shown by ps.")
@click.option("--token", envvar="LOADME_TOKEN", show_envvar=True,
              help="A Microsoft Entra ID access token (sent as Authorization: Bearer). Prefer LOADME_TOKEN or "
                   "--az-login, as for --key.")
@click.option("--az-login", is_flag=True,
              help="Get the token with: az account get-access-token --resource RESOURCE.")
@click.option("--resource", envvar="LOADME_RESOURCE", show_envvar=True,
              help="The app id URI of the API's Entra app registration, for --az-login.")
@click.option("--allow-http", is_flag=True,
              help="Send the key or token over plain http to a host other than this machine (refused without "
                   "it: anyone on the way can read them); a warning on stderr each time.")
@click.version_option(package_name="loadme-cli", prog_name="loadme")
@click.pass_context
def cli(ctx: click.Context, url: str, key: str | None, token: str | None, az_login: bool,
        resource: str | None, allow_http: bool) -> None:
    """Start loadme runs and follow them, read their logs, stats and poison queues."""
    if az_login and token:
        raise click.UsageError("give --token (LOADME_TOKEN) or --az-login, not both", ctx)
    if az_login and not resource:
        raise click.UsageError("--az-login needs --resource or LOADME_RESOURCE (the app id URI)", ctx)
    ctx.obj = Target(url, key or None, token or None, az_login, resource, allow_http)


# ---- run ------------------------------------------------------------------------------------------
def _variables(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    variables = {}
    for item in values:
        name, equals, value = item.partition("=")
        if not equals or not name:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", ctx, param)
        variables[name] = value
    return variables


def _commands(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[list[str]]:
    commands = []
    for item in values:
        try:
            argv = shlex.split(item)
        except ValueError as exc:
            raise click.BadParameter(f"{item!r}: {exc}", ctx, param) from exc
        if not argv:
            raise click.BadParameter("a step's command cannot be empty", ctx, param)
        commands.append(argv)
    return commands


def start_body(variables: dict[str, str], image: str | None, commands: list[list[str]],
               timeout_seconds: int | None, secrets: tuple[str, ...] = ()) -> dict[str, Any]:
    """The `POST /api/init_job` body: one step's `command`, or `steps` for several."""
    body: dict[str, Any] = {"variables": variables}
    if secrets:
        body["secrets"] = list(secrets)
    if image:
        body["image"] = image
    if len(commands) == 1:
        body["command"] = commands[0]
    elif commands:
        body["steps"] = [{"command": argv} for argv in commands]
    if timeout_seconds is not None:
        body["timeout_seconds"] = timeout_seconds
    return body


def wait_for_run(api: Api, run_id: str, say: Callable[[str], None],
                 sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Poll the run about once a second until it has ended; `say` a line whenever its state, step or
    reason changes. Returns the last status document."""
    last: tuple[Any, ...] | None = None
    while True:
        status: dict[str, Any] = api.get("runs", run_id)
        now = (status["state"], status.get("current_step"), status.get("reason"))
        if now != last:
            say(f"{datetime.now(UTC):%H:%M:%S}  {render.progress_line(status)}")
            last = now
        if status["state"] in render.TERMINAL_STATES:
            return status
        sleep(WAIT_POLL_SECONDS)


@cli.command()
@click.option("--var", "variables", multiple=True, metavar="NAME=VALUE", callback=_variables,
              help="A variable of the run, like ___Name=Ada (repeat for more).")
@click.option("--secret", "secrets", multiple=True, metavar="NAME",
              help="A secret variable every step's container gets, like ___ApiToken (one of the app's "
                   "SECRET_VARIABLES; repeat for more; none by default).")
@click.option("--image", metavar="IMAGE", help="The image of every step (default: the app's DEFAULT_IMAGE).")
@click.option("--step", "commands", multiple=True, metavar="CMD", callback=_commands,
              help="A step's command, split as a shell would (repeat for steps run in order; "
                   "default: the app's DEFAULT_COMMAND).")
@click.option("--timeout", "timeout_seconds", type=click.IntRange(min=1), metavar="SECONDS",
              help="The run's deadline (default: the app's RUN_TIMEOUT_SECONDS).")
@click.option("--idempotency-key", metavar="KEY", help="Repeating the command with the same key starts no second run.")
@click.option("--wait", is_flag=True, help="Follow the run's states and steps until it ends; exit 0 only if it "
                                           "succeeded.")
@json_option
@click.pass_context
def run(ctx: click.Context, variables: dict[str, str], secrets: tuple[str, ...], image: str | None,
        commands: list[list[str]], timeout_seconds: int | None, idempotency_key: str | None, wait: bool,
        as_json: bool) -> None:
    """Start a run; --wait follows it to its end."""
    api = _api(ctx)
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
    started = api.call("POST", "init_job", body=start_body(variables, image, commands, timeout_seconds, secrets),
                       headers=headers)
    run_id = started["run_id"]
    if not wait:
        if as_json:
            _print_json(started)
        else:
            _echo(f"started run {run_id}\nfollow it: loadme show {run_id}; loadme logs {run_id} --follow")
        return
    _echo(f"started run {run_id}", err=as_json)
    try:
        status = wait_for_run(api, run_id, lambda line: _echo(line, err=as_json))
    except KeyboardInterrupt:
        raise CliError(f"interrupted; run {run_id} goes on (loadme show {run_id}; loadme cancel {run_id})",
                       EXIT_INTERRUPTED) from None
    if as_json:
        _print_json(status)
    elif status["state"] != "succeeded":
        _echo(f"why: loadme show {run_id}; loadme logs {run_id}")
    if status["state"] != "succeeded":
        ctx.exit(EXIT_RUN_FAILED)


# ---- reading runs ---------------------------------------------------------------------------------
def _when(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return to_timestamp(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from exc


@cli.command()
@click.option("--state", type=click.Choice(render.STATES), help="Only runs in this state.")
@click.option("--since", metavar="WHEN", callback=_when,
              help="Created at or after WHEN: a time ago (30m, 12h, 1d, 1d12h) or an ISO 8601 timestamp with a "
                   "zone (default: the retention period).")
@click.option("--until", metavar="WHEN", callback=_when, help="Created at or before WHEN (default: now).")
@click.option("--limit", type=click.IntRange(1, 200), help="Runs per page (default 50).")
@click.option("--cursor", help="The next page: the cursor the previous page printed.")
@json_option
@click.pass_context
def runs(ctx: click.Context, state: str | None, since: str | None, until: str | None, limit: int | None,
         cursor: str | None, as_json: bool) -> None:
    """List runs, newest first."""
    document = _api(ctx).get("runs", params={"state": state, "since": since, "until": until, "limit": limit,
                                              "cursor": cursor})
    if as_json:
        _print_json(document)
        return
    _print_lines(render.runs_table(document))
    if document.get("next_cursor"):
        _echo(f"more: the same command with --cursor {document['next_cursor']}")


@cli.command()
@click.argument("run_id")
@json_option
@click.pass_context
def show(ctx: click.Context, run_id: str, as_json: bool) -> None:
    """A run's state and why, variables, timeline."""
    status = _api(ctx).get("runs", run_id)
    if as_json:
        _print_json(status)
    else:
        _print_lines(render.run_lines(status))


def follow_logs(api: Api, run_id: str, step: int | None, say: Callable[[str], None],
                sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> None:
    """Print each step's log as it grows (whole lines; the rest at the end) until the run has ended and its
    logs are archived (or FOLLOW_CLEANUP_GRACE_SECONDS after it ended)."""
    printed: dict[int, int] = {}  # step -> lines printed
    ended_at: float | None = None
    while True:
        status = api.get("runs", run_id)  # before the logs: when it says "cleaned up", the logs are final
        if status["state"] in render.TERMINAL_STATES and ended_at is None:
            ended_at = clock()
        final = ended_at is not None and (status["cleaned_up"] or clock() - ended_at > FOLLOW_CLEANUP_GRACE_SECONDS)
        document = api.get("runs", run_id, "logs", params={"step": step})
        for entry in document["steps"]:
            number = entry["step"]
            if number not in printed:
                printed[number] = 0
                if step is None:
                    say(render.log_header(entry) + "\n")
            lines = entry["text"].splitlines(keepends=True)
            if not final and lines and not lines[-1].endswith("\n"):
                lines = lines[:-1]  # an unfinished line waits for its end
            fresh = lines[printed[number]:]
            if fresh:
                text = "".join(fresh)
                say(text if text.endswith("\n") else text + "\n")
                printed[number] = len(lines)
        if final:
            return
        sleep(FOLLOW_POLL_SECONDS)


@cli.command()
@click.argument("run_id")
@click.option("--step", type=click.IntRange(min=1), help="Only this step.")
@click.option("--tail", type=click.IntRange(1, 100_000), metavar="LINES", help="Only the last LINES lines.")
@click.option("--follow", "-f", is_flag=True, help="Print new text as it arrives, until the run has ended.")
@json_option
@click.pass_context
def logs(ctx: click.Context, run_id: str, step: int | None, tail: int | None, follow: bool, as_json: bool) -> None:
    """A run's logs, archived or live.

    Each step's log: archived once the step is removed, live while it runs (secrets redacted).
    """
    api = _api(ctx)
    if follow:
        if as_json or tail:
            raise click.UsageError("--follow prints text as it comes: not with --json or --tail", ctx)
        try:
            follow_logs(api, run_id, step, lambda text: _echo(text, nl=False))
        except KeyboardInterrupt:
            raise CliError("interrupted", EXIT_INTERRUPTED) from None
        return
    document = api.get("runs", run_id, "logs", params={"step": step, "tail": tail})
    if as_json:
        _print_json(document)
    elif not document["steps"]:
        _echo(f"run {run_id} has no logs yet: no step has been deployed", err=True)
    else:
        _echo(render.logs_text(document, headers=step is None), nl=False)


@cli.command()
@click.argument("run_id")
@json_option
@click.pass_context
def cancel(ctx: click.Context, run_id: str, as_json: bool) -> None:
    """Cancel a run and remove its containers.

    A run already cancelled is fine; one that had ended otherwise is refused (exit 4).
    """
    outcome = _api(ctx).call("DELETE", "runs", run_id)
    if as_json:
        _print_json(outcome)
    else:
        _echo(f"run {outcome['run_id']} {outcome['state']}; its containers are being removed")


@cli.command()
@click.option("--days", type=click.IntRange(min=1), help="Days back, today (UTC) included (default 7).")
@json_option
@click.pass_context
def stats(ctx: click.Context, days: int | None, as_json: bool) -> None:
    """Runs per day by state, success rate, duration p50/p95."""
    document = _api(ctx).get("stats", params={"days": days})
    if as_json:
        _print_json(document)
    else:
        _print_lines(render.stats_lines(document))


# ---- poison queues --------------------------------------------------------------------------------
def _queue(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    name = value.removesuffix("-poison")
    if name not in QUEUES:
        raise click.BadParameter(f"{value!r} is none of {', '.join(QUEUES)}", ctx, param)
    return name


@cli.group(cls=LoadmeGroup, invoke_without_command=True)
@json_option
@click.pass_context
def poison(ctx: click.Context, as_json: bool) -> None:
    """Poison queues: list (the default), requeue, drop.

    A message lands in <queue>-poison when it failed too often or cannot be decoded.
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(poison_list, as_json=as_json)


@poison.command("list")
@click.argument("queue", required=False, callback=_queue)
@json_option
@click.pass_context
def poison_list(ctx: click.Context, queue: str | None = None, as_json: bool = False) -> None:
    """The messages of QUEUE's poison queue, or of all three (initjob, stage2, removeinfra).

    With --json and no QUEUE: {"queues": [one document per queue]}.
    """
    api = _api(ctx)
    documents = [api.get("poison", name) for name in ([queue] if queue else QUEUES)]
    if as_json:
        _print_json(documents[0] if queue else {"queues": documents})
    else:
        _print_lines(render.poison_lines(documents))


@poison.command("requeue")
@click.argument("queue", callback=_queue)
@click.argument("message_id")
@json_option
@click.pass_context
def poison_requeue(ctx: click.Context, queue: str, message_id: str, as_json: bool) -> None:
    """Put a message back on its queue; reopens the run its poisoning had ended."""
    _print_poison_action(_api(ctx).call("POST", "poison", queue, message_id, "requeue"), as_json)


@poison.command("drop")
@click.argument("queue", callback=_queue)
@click.argument("message_id")
@json_option
@click.pass_context
def poison_drop(ctx: click.Context, queue: str, message_id: str, as_json: bool) -> None:
    """Delete a message; its run, if still open, ends failed."""
    _print_poison_action(_api(ctx).call("DELETE", "poison", queue, message_id), as_json)


def _print_poison_action(outcome: Any, as_json: bool) -> None:
    if as_json:
        _print_json(outcome)
    else:
        _echo(render.poison_action_line(outcome))


def main() -> None:
    """The console script."""
    cli.main(prog_name="loadme")
