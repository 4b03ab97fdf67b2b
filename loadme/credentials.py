"""One Azure credential per process, created on first use (managed identity in Azure)."""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def default_credential() -> Any:
    """The process's `DefaultAzureCredential` (imported lazily: cold start matters)."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()
