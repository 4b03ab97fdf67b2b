"""What operators read: runs listed by time and state, per-day statistics, a run's logs.

Everything here reads the journal's index partitions (a bounded set of days) or one run's own
partition, never the whole journal (loadme.run_index).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from loadme.context import Context
from loadme.errors import RequestError
from loadme.journal import TERMINAL_STATES, EventType, RunState
from loadme.names import container_group_name
from loadme.run_index import CursorError
from loadme.variables import redact

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
DEFAULT_STATS_DAYS = 7
MAX_LOG_LINES = 100_000


def _time(name: str, value: str) -> datetime:
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise RequestError(400, f"{name!r} must be an ISO 8601 timestamp with a time zone, like "
                                "2026-11-25T00:00:00Z") from exc
    if stamp.tzinfo is None:
        raise RequestError(400, f"{name!r} needs a time zone (add Z for UTC)")
    return stamp


def _integer(name: str, value: str | None, default: int, low: int, high: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError as exc:
        raise RequestError(400, f"{name!r} must be an integer from {low} to {high}") from exc
    if not low <= number <= high:
        raise RequestError(400, f"{name!r} must be an integer from {low} to {high}")
    return number


def _known(params: Mapping[str, str], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(params) - set(allowed) - {"code"})  # `code` is the function key, for the host
    if unknown:
        raise RequestError(400, f"unknown query parameter(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")


def list_runs(ctx: Context, params: Mapping[str, str]) -> dict[str, Any]:
    """`GET /api/runs`: newest first, filtered, paged. Raises RequestError (400) for bad parameters."""
    _known(params, ("state", "since", "until", "limit", "cursor"))
    now = ctx.clock()
    until = _time("until", params["until"]) if params.get("until") else now
    since = _time("since", params["since"]) if params.get("since") else \
        now - timedelta(days=ctx.settings.run_retention_days)
    if since > until:
        raise RequestError(400, "'since' is after 'until'")
    state = params.get("state") or None
    if state is not None and state not in {s.value for s in RunState}:
        raise RequestError(400, f"'state' must be one of {', '.join(s.value for s in RunState)}")
    limit = _integer("limit", params.get("limit"), DEFAULT_LIMIT, 1, MAX_LIMIT)
    try:
        page = ctx.journal.index.runs(since, until, state, limit, params.get("cursor") or None)
    except CursorError as exc:
        raise RequestError(400, f"'cursor': {exc}") from exc
    return {"runs": [run.as_dict() for run in page.runs], "next_cursor": page.cursor}


def _percentile(values: list[float], share: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def run_stats(ctx: Context, params: Mapping[str, str]) -> dict[str, Any]:
    """`GET /api/stats`: runs per day by state, success rate and duration p50/p95 over `days` days
    (today included, UTC). Raises RequestError (400) for bad parameters."""
    _known(params, ("days",))
    days = _integer("days", params.get("days"), DEFAULT_STATS_DAYS, 1, ctx.settings.run_retention_days)
    today = ctx.clock().date()
    per_day, totals, durations = [], Counter[str](), []
    for offset in range(days - 1, -1, -1):
        day = today - timedelta(days=offset)
        runs = ctx.journal.index.day(day)
        counts = Counter(run.state for run in runs)
        totals.update(counts)
        durations += [run.duration_seconds for run in runs
                      if run.state in TERMINAL_STATES and run.duration_seconds is not None]
        per_day.append({"date": day.isoformat(), "total": len(runs), "by_state": dict(sorted(counts.items()))})
    ended = sum(totals[state] for state in TERMINAL_STATES)
    return {
        "days": per_day,
        "total": sum(totals.values()),
        "by_state": dict(sorted(totals.items())),
        "success_rate": totals[RunState.SUCCEEDED] / ended if ended else None,
        "duration_seconds": {"p50": _percentile(durations, 0.5), "p95": _percentile(durations, 0.95)},
    }


def run_logs(ctx: Context, run_id: str, params: Mapping[str, str]) -> dict[str, Any] | None:
    """`GET /api/runs/{id}/logs`: each step's archived log, or the live one while it runs (secrets
    redacted); None for an unknown run. Raises RequestError (400) for bad parameters."""
    _known(params, ("step", "tail"))
    events = ctx.journal.events(run_id)
    if not events:
        return None
    deployed = sorted({e.step for e in events if e.event == EventType.DEPLOYING})
    wanted = _integer("step", params.get("step"), 0, 1, 999)
    tail = _integer("tail", params.get("tail"), 0, 1, MAX_LOG_LINES) or None
    archived = {e.step: str(e.details["blob"]) for e in events if e.event == EventType.LOGS_ARCHIVED}
    removed = {e.step for e in events if e.event == EventType.REMOVED}
    steps = []
    for step in deployed:
        if wanted and step != wanted:
            continue
        if step in archived:
            source, text = "archive", ctx.storage.logs.download_blob(archived[step]).readall().decode(errors="replace")
        elif step not in removed:
            source, text = "live", redact(ctx.executor.logs(container_group_name(run_id, step), tail),
                                          ctx.settings.secret_values)
        else:
            source, text = "none", ""
        if tail and source == "archive":
            text = "\n".join(text.splitlines()[-tail:])
        steps.append({"step": step, "source": source, "blob": archived.get(step), "text": text})
    return {"run_id": run_id, "steps": steps}
