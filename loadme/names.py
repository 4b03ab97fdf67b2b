"""Pure name builders: run ids, container groups, deployments, queues, blobs. No I/O."""

from __future__ import annotations

import hashlib
import re

INITJOB_QUEUE = "initjob"
STAGE2_QUEUE = "stage2"
REMOVEINFRA_QUEUE = "removeinfra"
TRIGGER_QUEUES = (INITJOB_QUEUE, STAGE2_QUEUE, REMOVEINFRA_QUEUE)
OWNER_TAG = "loadme-owner"
OWNER_TAG_VALUE = "loadme"

RUN_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
MAX_STEP = 999  # the most steps a container group name can number (and a run can have)
GROUP_NAME_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?!-)){0,61}[a-z0-9]$")


def new_run_id() -> str:
    """A fresh random run id (32 lowercase hex characters)."""
    import uuid  # here, not at the top: `function_app.py` imports this module to index the functions

    return uuid.uuid4().hex


def run_id_for_idempotency_key(key: str) -> str:
    """The run id a client's `Idempotency-Key` maps to: the same key always names the same run."""
    return hashlib.sha256(b"loadme-idempotency\n" + key.encode()).hexdigest()[:32]


def is_run_id(value: str) -> bool:
    """True when `value` has the shape of a run id."""
    return bool(RUN_ID_PATTERN.fullmatch(value))  # not `match`: `$` also matches before a final newline


def container_group_name(run_id: str, step: int) -> str:
    """The ACI container group name of a run's step (loadme.slot.Slot.group_name, first attempt).

    Raises ValueError for a run id or step that cannot make a valid name.
    """
    from loadme.slot import Slot  # here: loadme.slot imports this module

    return Slot(run_id, step).group_name


def deployment_name(group_name: str) -> str:
    """The ARM deployment name for a container group (deterministic, so a redelivery reuses it;
    loadme.slot.Slot.deployment_name for a slot's group)."""
    from loadme.slot import DEPLOYMENT_SUFFIX

    return group_name + DEPLOYMENT_SUFFIX


def poison_queue(queue: str) -> str:
    """The Functions host's poison queue for `queue`."""
    return f"{queue}-poison"


def log_blob_name(run_id: str, step: int) -> str:
    """Where a step's container log is archived in the logs container (loadme.slot.Slot.blob_name)."""
    from loadme.slot import Slot

    return Slot(run_id, step).blob_name
