"""What operators read: runs listed by time and state, per-day statistics, a run's logs.

Everything here reads the journal's index partitions (a bounded set of days) or one run's own
partition, never the whole journal (loadme.run_index).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from loadme.context import Context
from loadme.errors import RequestError
from loadme.journal import TERMINAL_STATES, EventType, RunState
from loadme.run_index import CursorError
from loadme.slot import Slot
from loadme.variables import redact

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
DEFAULT_STATS_DAYS = 7
MAX_STATS_DAYS = 31  # days one stats request reads (one query each), whatever the retention
MAX_STATS_ROWS = 20_000  # index rows one stats request reads at most; past that its counts are partial
MAX_LOG_LINES = 100_000
MAX_STEP_LOG_BYTES = 1 << 20  # one step's text in a logs answer: at most its last MiB
MAX_LOGS_BYTES = 4 << 20  # all steps' texts of one logs answer together
LOG_SOURCES = ("archive", "live", "none")


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
    oldest = now - timedelta(days=ctx.settings.run_retention_days)
    until = _time("until", params["until"]) if params.get("until") else now
    since = _time("since", params["since"]) if params.get("since") else oldest
    if since > until:
        raise RequestError(400, "'since' is after 'until'")
    # Retention has removed older runs and none is newer than now: the days outside cost queries for nothing.
    since, until = max(since, oldest), min(until, now)
    state = params.get("state") or None
    if state is not None and state not in {s.value for s in RunState}:
        raise RequestError(400, f"'state' must be one of {', '.join(s.value for s in RunState)}")
    limit = _integer("limit", params.get("limit"), DEFAULT_LIMIT, 1, MAX_LIMIT)
    if since > until:  # the range lies wholly before the retention period or after now
        return {"runs": [], "next_cursor": None}
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
    (today included, UTC). At most MAX_STATS_ROWS runs are read, newest days first: a day with more is
    `partial` (its counts, and the totals, count the runs read). Raises RequestError (400) for bad parameters."""
    _known(params, ("days",))
    days = _integer("days", params.get("days"), DEFAULT_STATS_DAYS, 1,
                    min(ctx.settings.run_retention_days, MAX_STATS_DAYS))
    today = ctx.clock().date()
    per_day, totals, durations, budget = [], Counter[str](), [], MAX_STATS_ROWS
    for offset in range(days):
        day = today - timedelta(days=offset)
        runs = ctx.journal.index.day(day, budget + 1)  # one run more than the budget says whether it is all
        partial = len(runs) > budget
        runs = runs[:budget]
        budget -= len(runs)
        counts = Counter(run.state for run in runs)
        totals.update(counts)
        durations += [run.duration_seconds for run in runs
                      if run.state in TERMINAL_STATES and run.duration_seconds is not None]
        per_day.append({"date": day.isoformat(), "total": len(runs), "by_state": dict(sorted(counts.items())),
                        "partial": partial})
    ended = sum(totals[state] for state in TERMINAL_STATES)
    return {
        "days": per_day[::-1],
        "total": sum(totals.values()),
        "by_state": dict(sorted(totals.items())),
        "success_rate": totals[RunState.SUCCEEDED] / ended if ended else None,
        "duration_seconds": {"p50": _percentile(durations, 0.5), "p95": _percentile(durations, 0.95)},
        "partial": any(day["partial"] for day in per_day),
    }


def _offsets(value: str | None) -> dict[int, tuple[str, int]]:
    """`offsets`: `<step>:<source>:<bytes>` pairs, comma-separated (each step's `source` and `size` in
    the previous answer). Raises RequestError (400) naming the bad one."""
    found: dict[int, tuple[str, int]] = {}
    for item in value.split(",") if value else []:
        parts = item.split(":")
        if (len(parts) != 3 or not parts[0].isdigit() or not parts[2].isdigit() or parts[1] not in LOG_SOURCES
                or not 1 <= int(parts[0]) <= 999 or len(parts[2]) > 15):
            raise RequestError(400, f"'offsets': {item[:40]!r} is not <step>:<source>:<bytes>, like 1:archive:2048 "
                                    f"(source one of {', '.join(LOG_SOURCES)})")
        found[int(parts[0])] = (parts[1], int(parts[2]))
    return found


def _tail_start(data: bytes, lines: int) -> int:
    """Where the last `lines` lines of `data` begin (a final newline ends a line, it starts none)."""
    position = len(data) - 1 if data.endswith(b"\n") else len(data)
    for _ in range(lines):
        position = data.rfind(b"\n", 0, position)
        if position < 0:
            return 0
    return position + 1


def _window(size: int, start: int, share: int, tail: int | None,
            read: Callable[[int, int], bytes]) -> dict[str, Any]:
    """A step log's text from byte `start` to its end `size`, at most its last `share` bytes (whole lines
    when cut), then at most `tail` lines; `read(offset, length)` fetches bytes."""
    if start > size:  # not the log the offset was taken from (rewritten): from its start
        start = 0
    first = max(start, size - share)
    data = read(first, size - first) if first < size else b""
    truncated = first > start
    if truncated:  # cut mid-line, maybe mid-character: begin with the next whole line
        newline = data.find(b"\n")
        if 0 <= newline < len(data) - 1:
            data, first = data[newline + 1:], first + newline + 1
    if tail:
        cut = _tail_start(data, tail)
        data, first = data[cut:], first + cut
    return {"text": data.decode(errors="replace"), "offset": first, "size": size, "truncated": truncated}


def _reader(data: bytes) -> Callable[[int, int], bytes]:
    return lambda offset, length: data[offset:offset + length]


def _archived(ctx: Context, blob: str, start: int, share: int, tail: int | None) -> dict[str, Any]:
    """An archived log's window (loadme.reports._window): its size from the blob's properties, then one
    ranged read of the bytes wanted; nothing more when nothing is new."""
    from azure.core import MatchConditions

    client = ctx.storage.logs.get_blob_client(blob)
    properties = client.get_blob_properties()

    def read(offset: int, length: int) -> bytes:
        # The same version the size came from: a rewrite in between fails the read (412) instead of mixing two.
        return client.download_blob(offset=offset, length=length, etag=properties.etag,
                                    match_condition=MatchConditions.IfNotModified).readall()

    return _window(int(properties.size), start, share, tail, read)


def run_logs(ctx: Context, run_id: str, params: Mapping[str, str]) -> dict[str, Any] | None:
    """`GET /api/runs/{id}/logs`: each step's archived log, or the live one while it runs (secrets
    redacted); None for an unknown run. A step's text is bytes `offset` to `size` of its log: from the
    `offsets` the caller gives (what it has already), at most the last MAX_STEP_LOG_BYTES and an equal
    share of MAX_LOGS_BYTES; `truncated` when bytes before it were left out. Raises RequestError (400)
    for bad parameters."""
    _known(params, ("step", "tail", "offsets"))
    events = ctx.journal.events(run_id)
    if not events:
        return None
    deployed = sorted({e.step for e in events if e.event == EventType.DEPLOYING})
    wanted = _integer("step", params.get("step"), 0, 1, 999)
    tail = _integer("tail", params.get("tail"), 0, 1, MAX_LOG_LINES) or None
    offsets = _offsets(params.get("offsets"))
    archived = {e.step: str(e.details["blob"]) for e in events if e.event == EventType.LOGS_ARCHIVED}
    removed = {e.step for e in events if e.event == EventType.REMOVED}
    chosen = [step for step in deployed if not wanted or step == wanted]
    share = min(MAX_STEP_LOG_BYTES, MAX_LOGS_BYTES // max(1, len(chosen)))
    steps = []
    for step in chosen:
        source = "archive" if step in archived else "live" if step not in removed else "none"
        given, start = offsets.get(step, (source, 0))
        start = start if given == source else 0  # an offset in another source's text means nothing here
        if source == "archive":
            window = _archived(ctx, archived[step], start, share, tail)
        elif source == "live":
            # The whole live log: the platform bounds it (ACI returns at most its last 4 MB without `tail`,
            # https://learn.microsoft.com/javascript/api/@azure/arm-containerinstance/containerslistlogsoptionalparams)
            # and byte offsets need all of it.
            data = redact(ctx.executor.logs(Slot(run_id, step).group_name),
                          ctx.settings.secret_values).encode()
            window = _window(len(data), start, share, tail, _reader(data))
        else:
            window = _window(0, 0, share, tail, _reader(b""))
        steps.append({"step": step, "source": source, "blob": archived.get(step), **window})
    return {"run_id": run_id, "steps": steps}
