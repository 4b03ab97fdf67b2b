"""Executor factory: picks the implementation named by the EXECUTOR setting, imported lazily."""

from __future__ import annotations

from typing import TYPE_CHECKING

from loadme.executors.base import ContainerSpec, ContainerStatus, DeploymentFailure, Executor, OwnedGroup

if TYPE_CHECKING:
    from loadme.settings import Settings

__all__ = ["ContainerSpec", "ContainerStatus", "DeploymentFailure", "Executor", "OwnedGroup", "create_executor"]


def create_executor(settings: Settings) -> Executor:
    """The executor `settings.executor` names. Raises ValueError for an unknown one."""
    if settings.executor == "local":
        from loadme.executors.local import LocalExecutor

        return LocalExecutor(settings.local_executor_dir)
    if settings.executor == "aci":
        from loadme.executors.aci import create_aci_executor

        return create_aci_executor(settings)
    raise ValueError(f"unknown executor {settings.executor!r}")
