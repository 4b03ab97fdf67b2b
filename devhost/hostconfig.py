"""host.json's queue settings, read the way the Functions host reads them."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2}(?:\.\d+)?)$")


def timespan_seconds(value: Any) -> float:
    """A host.json duration (`"00:00:02"`, `"1.00:00:00"` or milliseconds) in seconds."""
    if isinstance(value, int | float):
        return float(value) / 1000.0
    match = _TIMESPAN.match(str(value))
    if not match:
        raise ValueError(f"not a timespan: {value!r}")
    days, hours, minutes, seconds = match.groups()
    return int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)


@dataclass(frozen=True)
class QueueSettings:
    """`extensions.queues` with the Functions host's defaults."""

    max_polling_interval: float = 60.0
    visibility_timeout: float = 0.0
    batch_size: int = 16
    new_batch_threshold: int = 8
    max_dequeue_count: int = 5
    message_encoding: str = "base64"

    @classmethod
    def from_host_json(cls, path: Path) -> QueueSettings:
        """Read `path`; missing keys keep the host's defaults."""
        data = json.loads(path.read_text())
        queues = data.get("extensions", {}).get("queues", {})
        defaults = cls()
        return cls(
            max_polling_interval=max(0.1, timespan_seconds(queues["maxPollingInterval"]))
            if "maxPollingInterval" in queues else defaults.max_polling_interval,
            visibility_timeout=timespan_seconds(queues["visibilityTimeout"])
            if "visibilityTimeout" in queues else defaults.visibility_timeout,
            batch_size=int(queues.get("batchSize", defaults.batch_size)),
            new_batch_threshold=int(queues.get("newBatchThreshold", defaults.new_batch_threshold)),
            max_dequeue_count=int(queues.get("maxDequeueCount", defaults.max_dequeue_count)),
            message_encoding=str(queues.get("messageEncoding", defaults.message_encoding)).lower(),
        )
