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
_GROUP_PREFIX = "loadme-"


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
    """The ACI container group name of a run's step: lowercase, 1-63 chars, `[a-z0-9-]`, no `--`.

    Raises ValueError for a run id or step that cannot make a valid name.
    """
    if not is_run_id(run_id):
        raise ValueError(f"not a run id: {run_id!r}")
    if not 1 <= step <= MAX_STEP:
        raise ValueError(f"step out of range: {step}")
    name = f"{_GROUP_PREFIX}{run_id}-{step}"
    assert GROUP_NAME_PATTERN.match(name), name
    return name


def parse_container_group(name: str) -> tuple[str, int] | None:
    """The run id and step a container group name was built from, or None if it is not one of ours."""
    if not name.startswith(_GROUP_PREFIX):
        return None
    run_id, _, step = name[len(_GROUP_PREFIX):].rpartition("-")
    if not is_run_id(run_id) or not step.isdigit():
        return None
    return run_id, int(step)


def deployment_name(group_name: str) -> str:
    """The ARM deployment name for a container group (deterministic, so a redelivery reuses it)."""
    return f"{group_name}-deploy"


def poison_queue(queue: str) -> str:
    """The Functions host's poison queue for `queue`."""
    return f"{queue}-poison"


def log_blob_name(run_id: str, step: int) -> str:
    """Where a step's container log is archived in the logs container."""
    return f"{run_id}/step-{step:03d}.log"
