"""The storage floor: what Azurite itself does per second, measured with the app's own queue client.

One queue round trip is a send, a receive and a delete of one message: what a queue hop costs at
the least, with no host polling in between. A tight loop of them gives Azurite's operations per
second on this machine at this moment; their median gives the floor of one hop.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass
from typing import Any

from loadme.settings import Settings
from loadme.storage import StorageClients

logger = logging.getLogger(__name__)

FLOOR_QUEUE = "benchfloor"
OPERATIONS_PER_ROUND_TRIP = 3  # send, receive, delete


@dataclass(frozen=True)
class RoundTrips:
    """Seconds of each queue round trip, in order."""

    seconds: list[float]

    @property
    def operations_per_second(self) -> float:
        return OPERATIONS_PER_ROUND_TRIP * len(self.seconds) / sum(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def __add__(self, other: RoundTrips) -> RoundTrips:
        return RoundTrips(self.seconds + other.seconds)


class FloorQueue:
    """A queue of its own on the stack's storage, for round trips."""

    def __init__(self, settings_env: dict[str, str]) -> None:
        self._client: Any = StorageClients(Settings.from_mapping(settings_env)).raw_queue(FLOOR_QUEUE)
        from azure.core.exceptions import ResourceExistsError

        try:
            self._client.create_queue()
        except ResourceExistsError:
            logger.info("queue %s exists already", FLOOR_QUEUE)

    def round_trips(self, count: int) -> RoundTrips:
        """`count` round trips in a tight loop."""
        seconds = []
        for index in range(count):
            started = time.perf_counter()
            self._client.send_message(f"round trip {index}")
            [message] = self._client.receive_messages(max_messages=1)
            self._client.delete_message(message)
            seconds.append(time.perf_counter() - started)
        return RoundTrips(seconds)
