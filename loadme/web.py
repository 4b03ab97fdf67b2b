"""What every HTTP answer of the API shares: JSON with its content type and security headers, a
typed error for every failure, and a bound on the slow reads so cheap requests keep a thread.

The Functions host answers an exception that escapes a function with a 500 and no body and no
Content-Type (Azure/azure-functions-host src/WebJobs.Script.WebHost/Middleware/ExceptionMiddleware.cs),
so `answer` never lets one escape: a caller's mistake is its 4xx, a storage fault a 503 JSON error,
anything else a logged 500 JSON error.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from loadme.errors import RequestError, SettingsError
from loadme.settings import worker_threads

logger = logging.getLogger(__name__)

# On every API answer. nosniff: a browser never runs a JSON answer as a script or page. HSTS: App
# Service's "HTTPS Only" redirects http to https but adds no Strict-Transport-Security header (the app
# or a web.config rule has to: https://learn.microsoft.com/en-us/answers/questions/1723781); browsers
# ignore it on plain http (RFC 6797 section 8.1), so the local stack sending it is harmless.
API_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
}
JSON = "application/json"
BUSY_RETRY_SECONDS = 2


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: status, JSON text, headers (API_HEADERS included)."""

    status: int
    text: str
    headers: dict[str, str] = field(default_factory=dict)


class Busy(RequestError):
    """Too many slow reads at once on this instance: 429 with Retry-After."""

    def __init__(self, what: str) -> None:
        super().__init__(429, f"too many {what} requests at once on this instance; retry in "
                              f"{BUSY_RETRY_SECONDS} s")


def error_text(message: str) -> str:
    """The JSON error body every error answer carries."""
    return json.dumps({"error": message})


def json_answer(status: int, body: Any, headers: dict[str, str] | None = None) -> Answer:
    """`body` (a JSON text, or anything json.dumps takes) with API_HEADERS and `headers`."""
    text = body if isinstance(body, str) else json.dumps(body)
    return Answer(status, text, {**API_HEADERS, **(headers or {})})


def answer(handle: Callable[[], Answer | tuple[int, Any]], what: str) -> Answer:
    """Run a request's handler; every failure becomes a JSON error answer (see the module doc)."""
    from azure.core.exceptions import AzureError

    try:
        outcome = handle()
    except RequestError as exc:
        retry = {"Retry-After": str(BUSY_RETRY_SECONDS)} if isinstance(exc, Busy) else None
        return json_answer(exc.status, error_text(exc.message), retry)
    except SettingsError as exc:
        logger.error("the app is misconfigured: %s", exc)
        return json_answer(500, error_text("the app is misconfigured; see its log"))
    except AzureError as exc:
        logger.error("%s failed on storage: %s: %s", what, type(exc).__name__, exc)
        return json_answer(503, error_text("storage failed; retry later"),
                           {"Retry-After": str(BUSY_RETRY_SECONDS)})
    except Exception:
        logger.exception("%s failed", what)
        return json_answer(500, error_text("internal error; see the app's log"))
    return outcome if isinstance(outcome, Answer) else json_answer(*outcome)


# Every HTTP invocation and every queue and timer trigger runs on that one pool; a slow read over many
# partitions holds a thread for as long as it reads. A third of the pool for them leaves the rest for
# everything else (status, starting runs, the queue triggers), so they still answer while reads pile up.
SLOW_READS = max(1, worker_threads() // 3)
_slow_reads = threading.BoundedSemaphore(SLOW_READS)


@contextmanager
def slow_read(what: str) -> Iterator[None]:
    """Hold one of SLOW_READS slots while reading; raises Busy (429) at once when none is free (waiting
    would hold a worker thread too)."""
    if not _slow_reads.acquire(blocking=False):
        raise Busy(what)
    try:
        yield
    finally:
        _slow_reads.release()
