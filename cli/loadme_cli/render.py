"""What the commands print for people: the API's documents as tables and lines (`--json` prints the
documents themselves). Pure functions of the documents, so tests need no server."""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from typing import Any

from loadme_cli.times import clock_time, seconds, short_time

TERMINAL_STATES = ("succeeded", "failed", "timed_out", "cancelled")
STATES = ("queued", "deploying", "running", *TERMINAL_STATES)
TIMELINE_FIELDS = ("state", "reason", "exit_code", "container_group", "image", "error", "queue", "message_id",
                   "blob")


# C0 controls but tab and newline, DEL, C1 controls: a job's text could carry ANSI/OSC sequences (retitle
# the terminal, rewrite lines, write the clipboard) to whoever reads it.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """`text` safe to print on a terminal: each control character but `\\n` and `\\t` shown as `\\xNN`
    (ESC as `\\x1b`); a CRLF line end is a newline."""
    return _CONTROL.sub(lambda found: f"\\x{ord(found.group()):02x}", text.replace("\r\n", "\n"))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """Left-aligned columns two spaces apart; the last column is not padded."""
    cells = [[str(h) for h in headers], *[["-" if c is None or c == "" else str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return ["  ".join(cell.ljust(widths[i]) if i < len(row) - 1 else cell for i, cell in enumerate(row)).rstrip()
            for row in cells]


def runs_table(document: dict[str, Any]) -> list[str]:
    """`GET /api/runs`: one line per run, newest first."""
    runs = document.get("runs", [])
    if not runs:
        return ["no runs found"]
    rows = [[r["run_id"], short_time(r.get("created_at")), r.get("state"), r.get("steps"),
             seconds(r.get("duration_seconds")) if r.get("duration_seconds") is not None else None,
             r.get("exit_code"), r.get("reason")] for r in runs]
    return table(["RUN", "CREATED", "STATE", "STEPS", "TOOK", "EXIT", "REASON"], rows)


def _detail(event: dict[str, Any]) -> str:
    parts = []
    for name in TIMELINE_FIELDS:
        value = event.get(name)
        if value in (None, "", [], {}):
            continue
        text = str(value)
        parts.append(f"{name}={text!r}" if " " in text else f"{name}={text}")
    return " ".join(parts)


def run_lines(status: dict[str, Any]) -> list[str]:
    """`GET /api/runs/{id}`: state and why, the plan, the variables, the timeline."""
    events: list[dict[str, Any]] = status.get("events", [])
    requested = next((e for e in events if e.get("event") == "requested"), {})
    terminal = next((e for e in events if e.get("event") == "terminal"), {})
    state = status["state"]
    took = f" after {seconds(terminal['duration_seconds'])}" if terminal.get("duration_seconds") is not None else ""
    lines = [
        f"run      {status['run_id']}",
        f"state    {state}{took}" + (f": {status['reason']}" if status.get("reason") else ""),
        f"created  {short_time(requested.get('created_at'))} by {requested.get('trigger', '?')}",
        f"step     {status.get('current_step', 0)} of {status.get('steps', 0)}"
        + ("; containers removed" if status.get("cleaned_up") else
           "; containers not yet removed" if state in TERMINAL_STATES else ""),
        "",
        "plan:",
    ]
    for number, step in enumerate(status.get("plan", []), start=1):
        lines.append(f"  {number}  {step.get('image', '')}  {shlex.join(step.get('command', []))}")
    lines += ["", "variables:"]
    lines += [f"  {name}={value}" for name, value in sorted(status.get("variables", {}).items())]
    lines += ["", "timeline (UTC):"]
    lines += table(["  AT", "STEP", "EVENT", "DETAILS"],
                   [[f"  {clock_time(e.get('at'))}", e.get("step"), e.get("event"), _detail(e)] for e in events])
    return lines


def progress_line(status: dict[str, Any]) -> str:
    """One line of `run --wait`: the state, the step, and why (when there is a reason)."""
    state = status["state"]
    step = f"step {status.get('current_step', 0)}/{status.get('steps', 0)}"
    where = "" if state in TERMINAL_STATES or (state == "queued" and not status.get("current_step")) else f"{step} "
    took = next((f" after {seconds(e['duration_seconds'])}" for e in status.get("events", [])
                 if e.get("event") == "terminal" and e.get("duration_seconds") is not None), "")
    reason = f": {status['reason']}" if status.get("reason") else ""
    return f"{where}{state}{took}{reason}"


def log_header(step: dict[str, Any]) -> str:
    return f"==> step {step['step']} ({step['source']}) <=="


def logs_text(document: dict[str, Any], headers: bool) -> str:
    """`GET /api/runs/{id}/logs`: each step's text, under a header line when `headers`."""
    out = []
    for step in document.get("steps", []):
        text = step.get("text", "")
        if headers:
            out.append(log_header(step) + "\n")
        out.append(text if not text or text.endswith("\n") else text + "\n")
    return "".join(out)


def stats_lines(document: dict[str, Any]) -> list[str]:
    """`GET /api/stats`: totals, success rate, p50/p95 and one line per day."""
    days = document.get("days", [])
    rate = document.get("success_rate")
    durations = document.get("duration_seconds", {})
    by_state = document.get("by_state", {})
    lines = [
        f"{document.get('total', 0)} runs in {len(days)} day(s): "
        + (", ".join(f"{count} {state}" for state, count in by_state.items()) or "none"),
        "success rate " + ("-" if rate is None else f"{rate:.0%}") + " of the runs that ended; duration p50 "
        + seconds(durations.get("p50")) + ", p95 " + seconds(durations.get("p95")),
        "",
    ]
    states = sorted({state for day in days for state in day.get("by_state", {})},
                    key=lambda s: STATES.index(s) if s in STATES else len(STATES))
    rows = [[day.get("date"), day.get("total"), *[day.get("by_state", {}).get(s, 0) for s in states]] for day in days]
    return lines + table(["DATE", "TOTAL", *[s.upper() for s in states]], rows)


def poison_lines(documents: Sequence[dict[str, Any]]) -> list[str]:
    """`GET /api/poison/{queue}` for one or more queues: a line per queue, a row per message."""
    lines: list[str] = []
    for document in documents:
        depth = document.get("depth", 0)
        more = " (the first 32 shown)" if document.get("truncated") else ""
        lines.append(f"{document['queue']}: {depth} message{'' if depth == 1 else 's'}{more}")
        messages = document.get("messages", [])
        if messages:
            rows = [[f"  {m['id']}", m.get("run_id"), m.get("step"), seconds(m.get("age_seconds")), m.get("error")]
                    for m in messages]
            lines += table(["  MESSAGE", "RUN", "STEP", "AGE", "ERROR"], rows)
    return lines


def poison_action_line(outcome: dict[str, Any]) -> str:
    """The outcome of a requeue or drop."""
    run = f"run {outcome['run_id']} step {outcome['step']}" if outcome.get("run_id") else "no run (undecodable)"
    if outcome.get("action") == "requeued":
        reopened = "; the run was reopened" if outcome.get("reopened") else ""
        return f"requeued message {outcome['message_id']} from {outcome['queue']} ({run}){reopened}"
    return f"dropped message {outcome['message_id']} from {outcome['queue']} ({run}; an open run ends failed)"
