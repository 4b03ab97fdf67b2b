"""The executor seam: deploy, read state, read logs, delete, list what this app owns.

Two implementations: `local` (a subprocess per container, for the local stack) and `aci`
(Azure Container Instances). The functions only ever see this interface.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from loadme.slot import Slot


class _OfASlot:
    """Run id and step read off the slot a value carries (one place for both dataclasses below)."""

    slot: Slot

    @property
    def run_id(self) -> str:
        return self.slot.run_id

    @property
    def step(self) -> int:
        return self.slot.step


@dataclass(frozen=True)
class ContainerSpec(_OfASlot):
    """One container group to run: a slot (a step of a run), named after it."""

    slot: Slot
    deadline: str
    image: str
    command: tuple[str, ...]
    environment: tuple[dict[str, str], ...]

    @property
    def name(self) -> str:
        """The container group's name."""
        return self.slot.group_name


@dataclass(frozen=True)
class ContainerStatus:
    """What the platform says about a container group.

    `state` is one of: pending, running, terminated, failed (could not start), missing;
    `finished_at` is when the container stopped, where the platform says.
    """

    state: str
    exit_code: int | None = None
    detail: str = ""
    finished_at: datetime | None = None


@dataclass(frozen=True)
class DeploymentFailure:
    """Why the platform gave up on a group after it accepted the deployment (one line)."""

    reason: str
    quota: bool  # a quota stopped it: the step waits for capacity instead of failing


@dataclass(frozen=True)
class OwnedGroup(_OfASlot):
    """A container group this app created (found by tag, or by the local executor's records)."""

    name: str
    slot: Slot
    deadline: str


class Executor(Protocol):
    """Runs container groups. Every method is idempotent."""

    def deploy(self, spec: ContainerSpec) -> bool:
        """Start `spec`; False when the group already exists (nothing new started).

        Raises TransientError (retry), QuotaExceeded (retry later) or DeployRejected (permanent).
        """
        ...

    def state(self, name: str) -> ContainerStatus:
        """The group's current state (`missing` when it does not exist)."""
        ...

    def logs(self, name: str, tail: int | None = None) -> str:
        """The container's output, at most the last `tail` lines; empty if the group is gone."""
        ...

    def delete(self, name: str) -> bool:
        """Delete the group; False when it was already gone."""
        ...

    def delete_deployment(self, name: str) -> bool:
        """Delete the record of the deployment that made group `name` (ARM's deployment history,
        which refuses new deployments past 800); False when there is none to delete."""
        ...

    def list_owned(self) -> list[OwnedGroup]:
        """Every group this app owns that still exists."""
        ...

    def failed_deployment(self, name: str) -> DeploymentFailure | None:
        """Why the accepted deployment of group `name` failed; None while it runs, once it succeeded,
        or where no deployment can fail after it was accepted."""
        ...
