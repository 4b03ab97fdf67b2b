"""The container's runner: environment -> job -> result message on the `stage2` queue.

    python runner.py JOB_COMMAND [ARGS...]

1. Reads the run's prefixed variables from its environment (secret ones are known by name).
2. Runs the job with the same environment minus the runner's own credentials, plus
   `LOADME_OUTPUT`: a file where the job appends `NAME=value` lines to add or change variables.
3. Posts every prefixed variable (secret ones left out), the exit code, a bounded and redacted log
   tail and the run/step result token to the `stage2` queue through the Queue REST API, with an
   add-only SAS or the container's managed identity. A post that fails is retried; if it never
   lands the runner says so and exits non-zero (75), so a result is never lost silently.

Exits with the job's exit code once the result is posted.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from xml.sax.saxutils import escape

import requests

from loadme.envelope import MAX_LOG_TAIL_CHARS, ResultMessage, bounded_tail
from loadme.variables import MAX_VARIABLES_BYTES, VariableFactory, parse_output_lines, redact, variables_size

EXIT_POST_FAILED = 75
EXIT_NOT_FOUND = 127
POST_ATTEMPTS = 6
POST_TIMEOUT_SECONDS = 15
QUEUE_API_VERSION = "2021-12-02"
IMDS_URL = "http://169.254.169.254/metadata/identity/oauth2/token"
RUNNER_SECRETS = ("LOADME_RESULT_TOKEN", "LOADME_RESULT_SAS")


def say(message: str) -> None:
    """A runner line in the container log, told apart from the job's own output."""
    print(f"[loadme-runner] {message}", flush=True)


def run_job(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run the job, streaming its output to ours; returns its exit code and the output's tail."""
    tail = bytearray()
    try:
        child = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except (FileNotFoundError, PermissionError) as exc:
        say(f"cannot start job {argv[0]!r}: {exc}")
        return EXIT_NOT_FOUND, f"cannot start job {argv[0]!r}: {exc}"
    assert child.stdout is not None
    while chunk := child.stdout.read1(65536):
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
        tail += chunk
        del tail[:-MAX_LOG_TAIL_CHARS * 4]
    code = child.wait()
    return (128 - code if code < 0 else code), tail.decode(errors="replace")


def bearer_token(env: dict[str, str]) -> str:
    """A storage token for the container's user-assigned managed identity (ACI's IMDS endpoint)."""
    params = {"api-version": "2018-02-01", "resource": "https://storage.azure.com/",
              "client_id": env["LOADME_IDENTITY_CLIENT_ID"]}
    response = requests.get(env.get("LOADME_IMDS_URL", IMDS_URL), params=params,
                            headers={"Metadata": "true"}, timeout=POST_TIMEOUT_SECONDS)
    response.raise_for_status()
    return str(response.json()["access_token"])


def post_result(env: dict[str, str], queue_text: str, sleep: Callable[[float], None] = time.sleep) -> bool:
    """POST the message to the queue, retrying throttling, 5xx and network errors. True if it landed."""
    url = env["LOADME_RESULT_URL"]
    body = f"<QueueMessage><MessageText>{escape(queue_text)}</MessageText></QueueMessage>"
    for attempt in range(1, POST_ATTEMPTS + 1):
        headers = {"x-ms-version": QUEUE_API_VERSION, "Content-Type": "application/xml"}
        try:
            if env.get("LOADME_RESULT_AUTH") == "identity":
                headers["Authorization"] = f"Bearer {bearer_token(env)}"
                target = url
            else:
                target = f"{url}?{env['LOADME_RESULT_SAS']}"
            response = requests.post(target, data=body.encode(), headers=headers, timeout=POST_TIMEOUT_SECONDS)
        except requests.RequestException as exc:
            problem = f"network error: {type(exc).__name__}"
        else:
            if response.status_code == 201:
                say(f"result posted (attempt {attempt})")
                return True
            problem = f"HTTP {response.status_code}"
            if response.status_code not in (408, 429) and response.status_code < 500:
                say(f"result post refused with {problem}; not retrying")
                return False
        if attempt < POST_ATTEMPTS:
            delay = min(2 ** (attempt - 1), 16)
            say(f"result post failed ({problem}); retrying in {delay}s")
            sleep(delay)
        else:
            say(f"result post failed ({problem}) after {POST_ATTEMPTS} attempts")
    return False


def main(
    argv: list[str], environ: dict[str, str] | None = None, sleep: Callable[[float], None] = time.sleep
) -> int:
    """Run the job named by `argv` and post its result. Returns the process exit code."""
    env = dict(os.environ if environ is None else environ)
    if not argv:
        say("usage: runner.py JOB_COMMAND [ARGS...]")
        return 2
    prefix = env.get("LOADME_PREFIX", "___")
    secret_names = [n for n in env.get("LOADME_SECRET_NAMES", "").split(",") if n]
    factory = VariableFactory(prefix, secret_names)
    secrets = [env[n] for n in secret_names if env.get(n)]
    variables = factory.from_environ(env)
    run_id, step = variables[prefix + "RunId"], int(variables[prefix + "Step"])
    say(f"run {run_id} step {step}: starting {argv[0]} with {len(variables)} variables")

    job_env = {k: v for k, v in env.items() if k not in RUNNER_SECRETS}
    with tempfile.TemporaryDirectory() as scratch:
        output_file = os.path.join(scratch, "output.env")
        open(output_file, "w").close()
        job_env["LOADME_OUTPUT"] = output_file
        exit_code, tail = run_job(argv, job_env)
        with open(output_file, errors="replace") as handle:
            added, bad_lines = parse_output_lines(handle.read())
    for line in bad_lines:
        say(f"ignored output line (not NAME=value): {redact(line, secrets)[:200]!r}")
    result_vars = {**variables, **{k: v for k, v in added.items() if k not in secret_names}}
    if variables_size(result_vars) > MAX_VARIABLES_BYTES:
        say(f"job output makes the variables larger than {MAX_VARIABLES_BYTES} bytes; outputs dropped")
        result_vars, exit_code = variables, exit_code or 1
        tail += "\n[loadme-runner] job output dropped: variables too large"
    say(f"job exited {exit_code}; {len(added)} variable(s) reported")
    message = ResultMessage(
        run_id=run_id, step=step, attempt=1,
        created_at=variables[prefix + "CreatedAt"], deadline=variables[prefix + "Deadline"],
        variables=result_vars, token=env["LOADME_RESULT_TOKEN"], exit_code=exit_code,
        log_tail=bounded_tail(redact(tail, secrets)),
        finished_at=datetime.now(UTC).isoformat(),
    )
    if not post_result(env, message.to_queue_text(), sleep):
        say("RESULT NOT DELIVERED: the run will be recorded as failed by the janitor")
        return EXIT_POST_FAILED
    return exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
