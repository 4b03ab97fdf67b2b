"""The container contract: what a step's container is given and what its runner gives back.

One definition for both sides: the app (both executors) builds a container's environment from
these names, and the runner in the image (`container/runner.py`) reads them. Standard library
only: `container/Dockerfile` ships this module into the image.

- Runner controls: environment variables, not prefixed, so they never become run variables. The
  secure ones reach ACI only as `secureValue` and the runner keeps them from the job.
- Reserved variables: prefixed names only the orchestrator sets (`<prefix>RunId`, ...).
- Output file protocol: the job appends `NAME=value` lines to the file named by `LOADME_OUTPUT`
  (the way CI systems collect step outputs); `parse_output_lines` reads it.
- The result: a `ResultMessage` (loadme.envelope) posted to the `stage2` queue; before it, the
  runner completes its redacted log in the block blob at `LOADME_LOG_URL`, which it has kept up to
  date as the job ran, always with `LOADME_LOG_SAS` (a SAS for that one blob, in both auth modes).
"""

from __future__ import annotations

import ctypes

PREFIX = "LOADME_PREFIX"
SECRET_NAMES = "LOADME_SECRET_NAMES"  # comma-separated names of the secret variables it was given
RESULT_URL = "LOADME_RESULT_URL"  # the stage2 queue's messages URL
RESULT_AUTH = "LOADME_RESULT_AUTH"  # how the result is posted: "sas" (local stack) or "identity" (Azure)
RESULT_SAS = "LOADME_RESULT_SAS"  # add-only SAS for the stage2 queue (secure)
RESULT_TOKEN = "LOADME_RESULT_TOKEN"  # HMAC of run id and step; stage2 accepts only it (secure)
LOG_URL = "LOADME_LOG_URL"  # the blob the runner uploads its log to
LOG_SAS = "LOADME_LOG_SAS"  # create/write SAS for that one blob, in both modes (secure)
IDENTITY_CLIENT_ID = "LOADME_IDENTITY_CLIENT_ID"  # the user-assigned identity to get tokens for
IMDS_URL = "LOADME_IMDS_URL"  # overrides ACI's managed identity endpoint (tests)
OUTPUT_FILE = "LOADME_OUTPUT"  # given to the job: where it appends NAME=value lines

# Never passed on to the job, and dropped from the runner's own environment: its credentials.
RUNNER_SECRETS = (RESULT_TOKEN, RESULT_SAS, LOG_SAS)
RESULT_AUTH_MODES = ("sas", "identity")

# Reserved variables: `<prefix><suffix>`, set by the orchestrator for every step.
RUN_ID = "RunId"
STEP = "Step"
CONTAINER_GROUP = "ContainerGroup"
IMAGE = "Image"
CREATED_AT = "CreatedAt"
DEADLINE = "Deadline"
TRIGGER = "Trigger"
RESERVED_SUFFIXES = (RUN_ID, STEP, CONTAINER_GROUP, IMAGE, CREATED_AT, DEADLINE, TRIGGER)


def parse_output_lines(text: str) -> tuple[dict[str, str], list[str]]:
    """Parse a job's output file of `NAME=value` lines (later lines win).

    Returns the variables and the lines that could not be parsed (blank lines are skipped).
    """
    found: dict[str, str] = {}
    bad: list[str] = []
    # Only \n ends a line (and a \r before it): str.splitlines() would also split on \x0b, \x85,
    # \u2028 and others, which are legitimate inside values.
    for line in text.split("\n"):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.strip():
            bad.append(line)
            continue
        found[name.strip()] = value
    return found, bad


PR_SET_DUMPABLE = 4  # <linux/prctl.h>


def protect_process() -> bool:
    """Make this process undumpable: its /proc files (environ, mem, fd...) become root-owned and a
    same-uid process can no longer read them or ptrace it (proc(5), PR_SET_DUMPABLE in prctl(2)).
    The job is unaffected: execve makes it dumpable again. Both the runner and the local
    executor's supervisor (which holds the same environment) call it first. False where prctl is unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False
