"""The `aci` executor (Azure Container Instances). Arrives with issue 3."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from loadme.executors.base import Executor
    from loadme.settings import Settings


def create_aci_executor(settings: Settings) -> Executor:
    """Not built yet. Raises NotImplementedError."""
    raise NotImplementedError("EXECUTOR=aci is not implemented yet")
