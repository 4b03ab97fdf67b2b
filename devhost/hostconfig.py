"""host.json, read the way the Functions host reads the parts the local host emulates.

Defaults and bounds follow the host and the Storage Queues extension; each names its source.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2}(?:\.\d+)?)$")

# Storage Queues extension, QueuesOptions: BatchSize 16, MaxDequeueCount 5, VisibilityTimeout zero,
# MaxPollingInterval 1 minute (min 100 ms), MessageEncoding base64 (azure-sdk-for-net
# sdk/storage/Microsoft.Azure.WebJobs.Extensions.Storage.Queues/src/Config/QueuesOptions.cs).
DEFAULT_BATCH_SIZE = 16
DEFAULT_MAX_DEQUEUE_COUNT = 5
DEFAULT_MAX_POLLING_SECONDS = 60.0
MIN_POLLING_SECONDS = 0.1
# Functions host: functionTimeout's default on Consumption/Flex is 5 minutes (ScriptHostOptions).
DEFAULT_FUNCTION_TIMEOUT_SECONDS = 300.0


def processor_count(environ: Mapping[str, str]) -> int:
    """SkuUtility.ProcessorCount: 1 on the Dynamic (Consumption) SKU, else the machine's processors."""
    return 1 if environ.get("WEBSITE_SKU") == "Dynamic" else (os.cpu_count() or 1)


def timespan_seconds(value: Any) -> float:
    """A host.json duration (`"00:00:02"`, `"1.00:00:00"`, or milliseconds as a number) in seconds.

    Raises ValueError for anything else.
    """
    if isinstance(value, int | float):
        return float(value) / 1000.0
    match = _TIMESPAN.match(str(value))
    if not match:
        raise ValueError(f"not a timespan: {value!r}")
    days, hours, minutes, seconds = match.groups()
    return int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)


@dataclass(frozen=True)
class QueueSettings:
    """`extensions.queues` with the extension's defaults."""

    max_polling_interval: float = DEFAULT_MAX_POLLING_SECONDS
    visibility_timeout: float = 0.0
    batch_size: int = DEFAULT_BATCH_SIZE
    new_batch_threshold: int = DEFAULT_BATCH_SIZE // 2
    max_dequeue_count: int = DEFAULT_MAX_DEQUEUE_COUNT
    message_encoding: str = "base64"

    @classmethod
    def from_host_json(cls, path: Path, processors: int = 1) -> QueueSettings:
        """Read `path`; missing keys keep the extension's defaults, `newBatchThreshold`'s being
        (batchSize / 2) x processors (QueuesOptions.NewBatchThreshold). Raises ValueError if malformed."""
        queues = json.loads(path.read_text()).get("extensions", {}).get("queues", {})
        batch_size = int(queues.get("batchSize", DEFAULT_BATCH_SIZE))
        encoding = str(queues.get("messageEncoding", "base64")).lower()
        if encoding not in ("base64", "none"):
            raise ValueError(f"host.json extensions.queues.messageEncoding: {encoding!r} is not base64 or none")
        return cls(
            max_polling_interval=max(MIN_POLLING_SECONDS, timespan_seconds(queues["maxPollingInterval"]))
            if "maxPollingInterval" in queues else DEFAULT_MAX_POLLING_SECONDS,
            visibility_timeout=timespan_seconds(queues["visibilityTimeout"]) if "visibilityTimeout" in queues else 0.0,
            batch_size=batch_size,
            new_batch_threshold=int(queues.get("newBatchThreshold", batch_size // 2 * processors)),
            max_dequeue_count=int(queues.get("maxDequeueCount", DEFAULT_MAX_DEQUEUE_COUNT)),
            message_encoding=encoding,
        )


@dataclass(frozen=True)
class HostSettings:
    """The host-wide settings the local host applies."""

    function_timeout: float = DEFAULT_FUNCTION_TIMEOUT_SECONDS
    queues: QueueSettings = QueueSettings()

    @classmethod
    def from_host_json(cls, path: Path, environ: Mapping[str, str] = os.environ) -> HostSettings:
        """Read `path`. Raises ValueError if a value is malformed."""
        data = json.loads(path.read_text())
        timeout = data.get("functionTimeout")
        return cls(
            function_timeout=timespan_seconds(timeout) if timeout is not None else DEFAULT_FUNCTION_TIMEOUT_SECONDS,
            queues=QueueSettings.from_host_json(path, processor_count(environ)),
        )
