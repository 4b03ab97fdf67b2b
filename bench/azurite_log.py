"""Storage requests counted for real: Azurite's access log has one line per request it served.

Every process that talks to storage (the local host, the worker, each container's runner, the
benchmark itself) goes through the one Azurite, so counting its log lines between two marks counts
everything a stretch of work cost, whatever client sent it.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

# 127.0.0.1 - - [25/Nov/2026:21:59:01 +0000] "GET /devstoreaccount1/qqq1/messages?numofmessages=1 HTTP/1.1" 200 -
ACCESS_LINE = re.compile(r'^\S+ \S+ \S+ \[[^\]]+\] "(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3})')


@dataclass(frozen=True)
class Request:
    """One request Azurite served."""

    method: str
    path: str
    status: int

    @property
    def kind(self) -> str:
        """What the request did, in storage terms: `queue receive`, `table insert`, `blob put`..."""
        resource, _, query = self.path.partition("?")
        parts = resource.split("/")[2:]  # after the account name
        if len(parts) >= 2 and parts[1] == "messages":
            verbs = {"POST": "send", "GET": "peek" if "peekonly=true" in query.lower() else "receive",
                     "DELETE": "delete", "PUT": "update"}
            return "queue " + verbs.get(self.method, self.method)
        if len(parts) >= 2:
            return "blob " + {"PUT": "put", "GET": "get", "DELETE": "delete"}.get(self.method, self.method)
        name = parts[0] if parts else ""
        if name in ("Tables", "$batch") or "(" in name or self.method in ("POST", "MERGE", "PATCH"):
            return "table " + _table_verb(self.method, name)
        if "restype=container" in query:
            return "blob container"
        return "queue " + {"GET": "properties", "PUT": "create", "DELETE": "delete queue"}.get(
            self.method, self.method)


def _table_verb(method: str, resource: str) -> str:
    if resource == "$batch":
        return "batch"
    if resource == "Tables":
        return "create table" if method == "POST" else "list tables"
    if method == "GET":
        return "query" if resource.endswith("()") else "get"
    return {"POST": "insert", "PUT": "upsert", "MERGE": "merge", "PATCH": "merge", "DELETE": "delete"}.get(
        method, method)


class AccessLog:
    """Azurite's log file, read between marks (byte offsets)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def mark(self) -> int:
        """Where the log ends now."""
        return self.path.stat().st_size

    def requests(self, start: int, end: int | None = None) -> list[Request]:
        """The requests logged between two marks (to the end of the log without `end`)."""
        with open(self.path, "rb") as log:
            log.seek(start)
            text = log.read(None if end is None else end - start).decode(errors="replace")
        found = []
        for line in text.splitlines():
            match = ACCESS_LINE.match(line)
            if match:
                found.append(Request(match["method"], match["path"], int(match["status"])))
        return found


def by_kind(requests: list[Request]) -> Counter[str]:
    """How many requests of each kind."""
    return Counter(request.kind for request in requests)
