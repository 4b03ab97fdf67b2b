"""Reproducible fault injection for the local host (chaos tests): which deliveries fail.

Decisions are a pure function of (seed, queue, message text), so a run of the chaos test can be
repeated exactly, and a duplicate delivery of a message meets the same faults as the original.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass

from loadme.errors import TransientError
from loadme.names import REMOVEINFRA_QUEUE


class InjectedFault(TransientError):
    """A transient failure the local host raised on purpose in place of the handler."""


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
