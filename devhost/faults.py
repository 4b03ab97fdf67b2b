"""Delivery faults and observation for tests: what the local host can do to messages on purpose.

None of this exists in Azure; it makes at-least-once delivery and transient failures happen on
demand, reproducibly:
- `FaultPlan`: which deliveries fail before the function runs. Decisions are a pure function of
  (seed, queue, message text), so a chaos run can be repeated exactly and a duplicate of a message
  meets the same faults as the original.
- `DeliveryFaults`: the plan, plus "deliver every message a second time", plus a tap file that
  records every decoded message body the host received (tests check no secret ever travels).
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
from dataclasses import dataclass
from pathlib import Path

from loadme.errors import TransientError
from loadme.names import REMOVEINFRA_QUEUE


class InjectedFault(TransientError):
    """A transient failure the local host raised on purpose in place of the function."""


@dataclass(frozen=True)
class FaultPlan:
    """`transient_rate`: share of messages whose first delivery fails;
    `removal_failure_rate`: share of removals whose first two deliveries fail."""

    seed: int
    transient_rate: float = 0.0
    removal_failure_rate: float = 0.0

    @classmethod
    def from_json(cls, text: str) -> FaultPlan:
        """Parse `{"seed": 1, "transient_rate": 0.2, ...}`. Raises ValueError or TypeError if malformed."""
        return cls(**json.loads(text))

    def failures(self, queue: str, text: str) -> int:
        """How many first deliveries of this message fail."""
        rnd = random.Random(f"{self.seed}:{queue}:{hashlib.sha256(text.encode()).hexdigest()}")
        if queue == REMOVEINFRA_QUEUE and rnd.random() < self.removal_failure_rate:
            return 2
        return 1 if rnd.random() < self.transient_rate else 0


class DeliveryFaults:
    """What the host does to deliveries for tests; the default does nothing."""

    def __init__(self, plan: FaultPlan | None = None, duplicate_deliveries: bool = False,
                 tap: Path | None = None) -> None:
        self.plan = plan
        self.duplicate_deliveries = duplicate_deliveries
        self.tap = tap
        self._duplicated: set[str] = set()
        self._lock = threading.Lock()

    def should_duplicate(self, queue_text: str) -> bool:
        """True the first time a message text is seen, when every message is delivered twice."""
        if not self.duplicate_deliveries:
            return False
        with self._lock:
            if queue_text in self._duplicated:
                return False
            self._duplicated.add(queue_text)
            return True

    def check(self, queue: str, queue_text: str, dequeue_count: int) -> None:
        """Raise InjectedFault when the plan says this delivery fails."""
        if self.plan and dequeue_count <= self.plan.failures(queue, queue_text):
            raise InjectedFault(f"injected transient fault (delivery {dequeue_count})")

    def record(self, queue: str, body: bytes) -> None:
        """Append a received message body to the tap file."""
        if self.tap is not None:
            with self._lock, open(self.tap, "ab") as tap:
                tap.write(queue.encode() + b" " + body + b"\n")
