"""The container's runner: environment -> job -> log upload -> result message on the `stage2` queue.

    python runner.py JOB_COMMAND [ARGS...]

1. Reads the run's prefixed variables from its environment (secret ones are known by name).
2. Runs the job with the same environment minus the runner's own credentials, plus
   `LOADME_OUTPUT`: a file where the job appends `NAME=value` lines to add or change variables.
3. Uploads its whole log (the job's output and its own lines, secrets redacted) to the blob at
   `LOADME_LOG_URL`, so the app never has to read the container's log from the platform.
4. Posts every prefixed variable (secret ones left out), the exit code, a bounded and redacted log
   tail and the run/step result token to the `stage2` queue through the Queue REST API.
Both calls use an add/create-only SAS (local stack) or the container's managed identity (Azure),
and are retried on throttling, 5xx and network errors. A log that cannot be uploaded is reported
in the result (the app then reads it from the platform); a result that never lands makes the
runner say so and exit 75, so a result is never lost silently.

Exits with the job's exit code once the result is posted. The names it reads are loadme.contract.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO
from xml.sax.saxutils import escape

import requests

from loadme import contract
from loadme.envelope import MAX_LOG_TAIL_CHARS, ResultMessage, bounded_tail
from loadme.variables import MAX_VARIABLES_BYTES, VariableFactory, redact, variables_size

EXIT_POST_FAILED = 75
EXIT_NOT_FOUND = 127
ATTEMPTS = 6
TIMEOUT_SECONDS = 15
QUEUE_API_VERSION = "2021-12-02"
BLOB_API_VERSION = "2021-12-02"
IMDS_URL = "http://169.254.169.254/metadata/identity/oauth2/token"
# The log kept for upload: its last 64 MiB (a single Put Blob; longer logs lose their start).
MAX_LOG_BYTES = 64 * 1024 * 1024


class Log:
    """Everything the container prints: to stdout (the platform's log), to a file for the upload,
    and the tail for the result message."""

    def __init__(self, file: IO[bytes]) -> None:
        self.file = file
        self.tail = bytearray()

    def write(self, chunk: bytes) -> None:
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
        self.file.write(chunk)
        self.tail += chunk
        del self.tail[:-MAX_LOG_TAIL_CHARS * 4]

    def say(self, message: str) -> None:
        """A runner line, told apart from the job's own output."""
        self.write(f"[loadme-runner] {message}\n".encode())

    def text(self) -> str:
        self.file.flush()
        size = self.file.tell()
        self.file.seek(max(0, size - MAX_LOG_BYTES))
        text = self.file.read().decode(errors="replace")
        return text if size <= MAX_LOG_BYTES else f"[loadme-runner] log cut to its last {MAX_LOG_BYTES} bytes\n{text}"


def run_job(argv: list[str], env: dict[str, str], log: Log) -> int:
    """Run the job, streaming its output into the log; returns its exit code."""
    try:
        child = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except (FileNotFoundError, PermissionError) as exc:
        log.say(f"cannot start job {argv[0]!r}: {exc}")
        return EXIT_NOT_FOUND
    assert child.stdout is not None
    while chunk := child.stdout.read1(65536):
        log.write(chunk)
    code = child.wait()
    return 128 - code if code < 0 else code


def bearer_token(env: dict[str, str]) -> str:
    """A storage token for the container's user-assigned managed identity (ACI's IMDS endpoint)."""
    params = {"api-version": "2018-02-01", "resource": "https://storage.azure.com/",
              "client_id": env[contract.IDENTITY_CLIENT_ID]}
    response = requests.get(env.get(contract.IMDS_URL, IMDS_URL), params=params,
                            headers={"Metadata": "true"}, timeout=TIMEOUT_SECONDS)
    response.raise_for_status()
    return str(response.json()["access_token"])


def _send(what: str, method: str, url: str, sas_name: str, body: bytes, headers: dict[str, str], expected: int,
          env: dict[str, str], log: Log, sleep: Callable[[float], None]) -> bool:
    """One storage REST call with SAS or identity, retried on 408/429/5xx and network errors."""
    for attempt in range(1, ATTEMPTS + 1):
        request_headers = dict(headers)
        try:
            if env.get(contract.RESULT_AUTH) == "identity":
                request_headers["Authorization"] = f"Bearer {bearer_token(env)}"
                target = url
            else:
                target = f"{url}?{env[sas_name]}"
            response = requests.request(method, target, data=body, headers=request_headers, timeout=TIMEOUT_SECONDS)
        except requests.RequestException as exc:
            problem = f"network error: {type(exc).__name__}"
        else:
            if response.status_code == expected:
                log.say(f"{what} (attempt {attempt})")
                return True
            problem = f"HTTP {response.status_code}"
            if response.status_code not in (408, 429) and response.status_code < 500:
                log.say(f"{what} refused with {problem}; not retrying")
                return False
        if attempt < ATTEMPTS:
            delay = min(2 ** (attempt - 1), 16)
            log.say(f"{what} failed ({problem}); retrying in {delay}s")
            sleep(delay)
        else:
            log.say(f"{what} failed ({problem}) after {ATTEMPTS} attempts")
    return False


def upload_log(env: dict[str, str], text: str, log: Log, sleep: Callable[[float], None] = time.sleep) -> bool:
    """PUT the whole log as a block blob at LOADME_LOG_URL. True if it landed."""
    headers = {"x-ms-version": BLOB_API_VERSION, "x-ms-blob-type": "BlockBlob",
               "Content-Type": "text/plain; charset=utf-8"}
    return _send("log uploaded", "PUT", env[contract.LOG_URL], contract.LOG_SAS, text.encode(), headers, 201,
                 env, log, sleep)


def post_result(env: dict[str, str], queue_text: str, log: Log, sleep: Callable[[float], None] = time.sleep) -> bool:
    """POST the message to the stage2 queue. True if it landed."""
    body = f"<QueueMessage><MessageText>{escape(queue_text)}</MessageText></QueueMessage>".encode()
    headers = {"x-ms-version": QUEUE_API_VERSION, "Content-Type": "application/xml"}
    return _send("result posted", "POST", env[contract.RESULT_URL], contract.RESULT_SAS, body, headers, 201,
                 env, log, sleep)


def main(
    argv: list[str], environ: dict[str, str] | None = None, sleep: Callable[[float], None] = time.sleep
) -> int:
    """Run the job named by `argv`, upload its log and post its result. Returns the exit code."""
    env = dict(os.environ if environ is None else environ)
    with tempfile.TemporaryDirectory() as scratch, open(os.path.join(scratch, "log"), "w+b") as log_file:
        log = Log(log_file)
        if not argv:
            log.say("usage: runner.py JOB_COMMAND [ARGS...]")
            return 2
        prefix = env.get(contract.PREFIX, "___")
        secret_names = [n for n in env.get(contract.SECRET_NAMES, "").split(",") if n]
        factory = VariableFactory(prefix, secret_names)
        secrets = [env[n] for n in secret_names if env.get(n)]
        secrets += [env[n] for n in contract.RUNNER_SECRETS if env.get(n)]
        variables = factory.from_environ(env)
        run_id, step = variables[prefix + contract.RUN_ID], int(variables[prefix + contract.STEP])
        log.say(f"run {run_id} step {step}: starting {argv[0]} with {len(variables)} variables")

        job_env = {k: v for k, v in env.items() if k not in contract.RUNNER_SECRETS}
        output_file = os.path.join(scratch, "output.env")
        open(output_file, "w").close()
        job_env[contract.OUTPUT_FILE] = output_file
        exit_code = run_job(argv, job_env, log)
        with open(output_file, errors="replace") as handle:
            added, bad_lines = contract.parse_output_lines(handle.read())
        for line in bad_lines:
            log.say(f"ignored output line (not NAME=value): {redact(line, secrets)[:200]!r}")
        result_vars = {**variables, **{k: v for k, v in added.items() if k not in secret_names}}
        if variables_size(result_vars) > MAX_VARIABLES_BYTES:
            log.say(f"job output makes the variables larger than {MAX_VARIABLES_BYTES} bytes; outputs dropped")
            result_vars, exit_code = variables, exit_code or 1
        log.say(f"job exited {exit_code}; {len(added)} variable(s) reported")
        uploaded = upload_log(env, redact(log.text(), secrets), log, sleep)
        message = ResultMessage(
            run_id=run_id, step=step, token=env[contract.RESULT_TOKEN], exit_code=exit_code, variables=result_vars,
            log_tail=bounded_tail(redact(log.tail.decode(errors="replace"), secrets)),
            finished_at=datetime.now(UTC).isoformat(), log_uploaded=uploaded,
        )
        if not post_result(env, message.to_queue_text(), log, sleep):
            log.say("RESULT NOT DELIVERED: the run will be recorded as failed by the janitor")
            return EXIT_POST_FAILED
        return exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
