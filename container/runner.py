"""The container's runner: environment -> job -> log upload -> result message on the `stage2` queue.

    python runner.py JOB_COMMAND [ARGS...]

1. Makes itself undumpable (`prctl(PR_SET_DUMPABLE, 0)`) and drops its credentials from its own
   environment, so a job running under the same uid cannot read them from `/proc/<runner>/environ`,
   `/proc/<runner>/mem` or by ptrace. (A job running as root, or with CAP_SYS_PTRACE, still could:
   the image runs everything as uid 10001.)
2. Reads the run's prefixed variables from its environment (secret ones are known by name).
3. Runs the job with the same environment minus the runner's own credentials, plus
   `LOADME_OUTPUT`: a file where the job appends `NAME=value` lines to add or change variables.
4. Echoes the job's output to stdout (the platform's log) line by line with every secret redacted,
   and keeps the blob at `LOADME_LOG_URL` up to date as it goes (every LOG_FLUSH_SECONDS), so a
   container killed mid-job still leaves what it printed; the final upload completes it. The app
   never has to read the container's log from the platform.
5. Posts every prefixed variable (secret ones left out), the exit code, a bounded and redacted log
   tail and the run/step result token to the `stage2` queue through the Queue REST API.
The log is written with the per-blob create/write SAS the app gave it (`LOADME_LOG_SAS`, in both
modes); the result is posted with an add-only SAS (local stack) or the container's managed
identity (Azure). Both are retried on throttling, 5xx and network errors. A log that cannot be
uploaded is reported in the result (the app then reads it from the platform).

Exits 0 once the result is posted (the job's exit code travels in the result) and 0 after a post
that failed too (it says so; the janitor records a stopped group without a result as failed):
ACI may restart a container that exits non-zero even with restartPolicy Never, which would run the
job twice ("If the container exits with a nonzero exit code, the container might still be restarted
by the platform", https://learn.microsoft.com/azure/container-instances/container-instances-restart-policy).
Only a runner crash exits non-zero. The names it reads are loadme.contract.
"""

from __future__ import annotations

import base64
import os
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO
from urllib.parse import quote
from xml.sax.saxutils import escape

import requests

from loadme import contract
from loadme.envelope import MAX_LOG_TAIL_CHARS, ResultMessage, bounded_tail
from loadme.variables import MAX_VARIABLES_BYTES, REDACTED, VariableFactory, redact, variables_size

EXIT_NOT_FOUND = 127
ATTEMPTS = 6
TIMEOUT_SECONDS = 15
QUEUE_API_VERSION = "2021-12-02"
BLOB_API_VERSION = "2021-12-02"
IMDS_URL = "http://169.254.169.254/metadata/identity/oauth2/token"
# The log kept in the blob: its last 64 MiB (older blocks leave the block list; a line says so).
MAX_LOG_BYTES = 64 * 1024 * 1024
# Put Block takes up to 4000 MiB and a blob up to 50,000 committed blocks
# (https://learn.microsoft.com/rest/api/storageservices/put-block#remarks); 4 MiB keeps each request
# small, and past MAX_BLOCKS small blocks the kept window is staged again as 4 MiB blocks.
BLOCK_BYTES = 4 * 1024 * 1024
MAX_BLOCKS = 10_000
LOG_FLUSH_SECONDS = 5.0
# A line longer than this is echoed without waiting for its newline (minus what could start a secret).
MAX_LINE_BYTES = 64 * 1024


class Log:
    """Everything the container prints, redacted line by line: to stdout (the platform's log), to a
    file for the upload, and the tail for the result message.

    Output is held until its newline so a secret split across two reads is still seen whole. A line
    longer than MAX_LINE_BYTES (or one pending at a periodic flush) goes out redacted except its
    last (longest secret - 1) bytes: any secret not yet complete must start within them.
    """

    def __init__(self, file: IO[bytes], secrets: list[str] | None = None) -> None:
        self.file = file
        self.tail = bytearray()
        self.pending = bytearray()
        self.secrets = sorted({s.encode() for s in secrets or [] if s}, key=len, reverse=True)
        self.keep = max((len(s) for s in self.secrets), default=1) - 1

    def _redact(self, data: bytes) -> bytes:
        for secret in self.secrets:
            data = data.replace(secret, REDACTED.encode())
        return data

    def _emit(self, data: bytes) -> None:
        if not data:
            return
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        self.file.write(data)
        self.tail += data
        del self.tail[:-MAX_LOG_TAIL_CHARS * 4]

    def write(self, chunk: bytes) -> None:
        self.pending += chunk
        end = self.pending.rfind(b"\n")
        if end >= 0:
            self._emit(self._redact(bytes(self.pending[:end + 1])))
            del self.pending[:end + 1]
        if len(self.pending) > MAX_LINE_BYTES:
            self.flush_partial()

    def flush_partial(self) -> None:
        """Emit the unfinished line but for the bytes that could begin a secret."""
        redacted = self._redact(bytes(self.pending))
        cut = len(redacted) - self.keep
        if cut > 0:
            self._emit(redacted[:cut])
            self.pending[:] = redacted[cut:]

    def close(self) -> None:
        """Emit whatever is left (the job has ended: nothing more can complete a secret)."""
        self._emit(self._redact(bytes(self.pending)))
        self.pending.clear()

    def say(self, message: str) -> None:
        """A runner line, told apart from the job's own output."""
        self.write(f"[loadme-runner] {message}\n".encode())

    def size(self) -> int:
        """Bytes written to the file so far (all of them readable with `read`)."""
        self.file.flush()
        return self.file.tell()

    def read(self, start: int, end: int) -> bytes:
        return os.pread(self.file.fileno(), end - start, start)


def run_job(argv: list[str], env: dict[str, str], log: Log, tick: Callable[[], object] = lambda: None,
            every: float = LOG_FLUSH_SECONDS) -> int:
    """Run the job, streaming its output into the log and calling `tick` every `every` seconds;
    returns its exit code."""
    try:
        child = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except (FileNotFoundError, PermissionError) as exc:
        log.say(f"cannot start job {argv[0]!r}: {exc}")
        return EXIT_NOT_FOUND
    assert child.stdout is not None
    fd = child.stdout.fileno()
    due = time.monotonic() + every
    while True:
        ready, _, _ = select.select([fd], [], [], max(0.0, due - time.monotonic()))
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            log.write(chunk)
        if time.monotonic() >= due:
            log.flush_partial()
            tick()
            due = time.monotonic() + every
    child.stdout.close()
    log.close()
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


def _send(what: str, method: str, url: str, sas_name: str | None, body: bytes, headers: dict[str, str],
          expected: int, env: dict[str, str], log: Log, sleep: Callable[[float], None], attempts: int = ATTEMPTS,
          quiet: bool = False) -> bool:
    """One storage REST call, retried on 408/429/5xx and network errors. `sas_name` names the SAS to
    append to the URL (which may carry a query already); None means the managed identity's token.
    Never says the URL: it carries the SAS."""
    for attempt in range(1, attempts + 1):
        request_headers = dict(headers)
        try:
            if sas_name is None:
                request_headers["Authorization"] = f"Bearer {bearer_token(env)}"
                target = url
            else:
                target = f"{url}{'&' if '?' in url else '?'}{env[sas_name]}"
            response = requests.request(method, target, data=body, headers=request_headers, timeout=TIMEOUT_SECONDS)
        except requests.RequestException as exc:
            problem = f"network error: {type(exc).__name__}"
        else:
            if response.status_code == expected:
                if not quiet:
                    log.say(f"{what} (attempt {attempt})")
                return True
            problem = f"HTTP {response.status_code}"
            if response.status_code not in (408, 429) and response.status_code < 500:
                log.say(f"{what} refused with {problem}; not retrying")
                return False
        if attempt < attempts:
            delay = min(2 ** (attempt - 1), 16)
            log.say(f"{what} failed ({problem}); retrying in {delay}s")
            sleep(delay)
        else:
            log.say(f"{what} failed ({problem}) after {attempts} attempt(s)")
    return False


@dataclass(frozen=True)
class Block:
    """A staged block of the log blob: its id and the bytes of the log file it holds."""

    id: str
    start: int
    end: int


class LogUpload:
    """The log blob at LOADME_LOG_URL as a block blob the runner keeps up to date.

    Each `flush` stages what the log gained since the last one (Put Block) and commits the list
    (Put Block List), so the blob always holds the log up to the last flush. A block blob rather
    than an append blob: a commit that is retried is idempotent (an Append Block retried after a
    lost answer appends twice), and dropping the oldest blocks from the list keeps the blob to the
    log's last MAX_LOG_BYTES, as the single upload did before. Uses the per-blob SAS in both modes.
    """

    def __init__(self, env: dict[str, str], log: Log, sleep: Callable[[float], None]) -> None:
        self.env, self.log, self.sleep = env, log, sleep
        self.url = env[contract.LOG_URL]
        self.blocks: list[Block] = []
        self.sent = 0  # bytes of the log file staged so far
        self.serial = 0
        self.cut_marker: str | None = None  # the staged "log cut" line, once the start was dropped

    def _new_id(self) -> str:
        self.serial += 1
        # Every block id of a blob must have the same length (Put Block: blockid).
        return base64.b64encode(f"{self.serial:010d}".encode()).decode()

    def _stage(self, data: bytes, attempts: int, quiet: bool) -> str | None:
        block_id = self._new_id()
        url = f"{self.url}?comp=block&blockid={quote(block_id, safe='')}"
        headers = {"x-ms-version": BLOB_API_VERSION, "Content-Type": "application/octet-stream"}
        ok = _send("log block staged", "PUT", url, contract.LOG_SAS, data, headers, 201, self.env, self.log,
                   self.sleep, attempts, quiet=quiet)
        return block_id if ok else None

    def _stage_range(self, start: int, end: int, attempts: int, quiet: bool) -> list[Block] | None:
        staged: list[Block] = []
        for offset in range(start, end, BLOCK_BYTES):
            stop = min(offset + BLOCK_BYTES, end)
            block_id = self._stage(self.log.read(offset, stop), attempts, quiet)
            if block_id is None:
                return None
            staged.append(Block(block_id, offset, stop))
        return staged

    def flush(self, final: bool = False) -> bool:
        """Stage what is new and commit. A periodic flush tries once, quietly (the next one catches
        up); the final one retries and says how it went. True if the blob now holds the log."""
        attempts = ATTEMPTS if final else 1
        end = self.log.size()
        new = self._stage_range(self.sent, end, attempts, quiet=True)
        if new is None:
            return False
        self.blocks += new
        self.sent = end
        while len(self.blocks) > 1 and self.blocks[-1].end - self.blocks[0].start > MAX_LOG_BYTES:
            self.blocks.pop(0)  # the log's start leaves the blob: it keeps the last MAX_LOG_BYTES
        if self.blocks and self.blocks[0].start > 0 and self.cut_marker is None:
            line = f"[loadme-runner] log cut to its last {MAX_LOG_BYTES} bytes\n".encode()
            self.cut_marker = self._stage(line, attempts, quiet=True)
            if self.cut_marker is None:
                return False
        if len(self.blocks) > MAX_BLOCKS:
            merged = self._stage_range(self.blocks[0].start, self.blocks[-1].end, attempts, quiet=True)
            if merged is None:
                return False
            self.blocks = merged
        ids = ([self.cut_marker] if self.cut_marker and self.blocks[0].start > 0 else []) + [b.id for b in self.blocks]
        body = ("<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>"
                + "".join(f"<Latest>{i}</Latest>" for i in ids) + "</BlockList>").encode()
        headers = {"x-ms-version": BLOB_API_VERSION, "Content-Type": "application/xml",
                   "x-ms-blob-content-type": "text/plain; charset=utf-8"}
        return _send("log uploaded", "PUT", f"{self.url}?comp=blocklist", contract.LOG_SAS, body, headers, 201,
                     self.env, self.log, self.sleep, attempts, quiet=not final)


def post_result(env: dict[str, str], queue_text: str, log: Log, sleep: Callable[[float], None] = time.sleep) -> bool:
    """POST the message to the stage2 queue (SAS locally, the managed identity in Azure). True if it landed."""
    body = f"<QueueMessage><MessageText>{escape(queue_text)}</MessageText></QueueMessage>".encode()
    headers = {"x-ms-version": QUEUE_API_VERSION, "Content-Type": "application/xml"}
    sas_name = None if env.get(contract.RESULT_AUTH) == "identity" else contract.RESULT_SAS
    return _send("result posted", "POST", env[contract.RESULT_URL], sas_name, body, headers, 201, env, log, sleep)


def main(
    argv: list[str], environ: dict[str, str] | None = None, sleep: Callable[[float], None] = time.sleep
) -> int:
    """Run the job named by `argv`, upload its log and post its result. Returns the exit code: 0
    once it has run the job, whether or not the result landed (see the module docstring)."""
    env = dict(os.environ if environ is None else environ)
    secret_names = [n for n in env.get(contract.SECRET_NAMES, "").split(",") if n]
    secrets = [env[n] for n in secret_names if env.get(n)]
    secrets += [env[n] for n in contract.RUNNER_SECRETS if env.get(n)]
    with tempfile.TemporaryDirectory() as scratch, open(os.path.join(scratch, "log"), "w+b") as log_file:
        log = Log(log_file, secrets)
        if not argv:
            log.say("usage: runner.py JOB_COMMAND [ARGS...]")
            return 2
        prefix = env.get(contract.PREFIX, "___")
        factory = VariableFactory(prefix, secret_names)
        variables = factory.from_environ(env)
        run_id, step = variables[prefix + contract.RUN_ID], int(variables[prefix + contract.STEP])
        log.say(f"run {run_id} step {step}: starting {argv[0]} with {len(variables)} variables")

        job_env = {k: v for k, v in env.items() if k not in contract.RUNNER_SECRETS}
        output_file = os.path.join(scratch, "output.env")
        open(output_file, "w").close()
        job_env[contract.OUTPUT_FILE] = output_file
        upload = LogUpload(env, log, sleep)
        exit_code = run_job(argv, job_env, log, tick=upload.flush)
        with open(output_file, errors="replace") as handle:
            added, bad_lines = contract.parse_output_lines(handle.read())
        for line in bad_lines:
            log.say(f"ignored output line (not NAME=value): {redact(line, secrets)[:200]!r}")
        result_vars = {**variables, **{k: v for k, v in added.items() if k not in secret_names}}
        if variables_size(result_vars) > MAX_VARIABLES_BYTES:
            log.say(f"job output makes the variables larger than {MAX_VARIABLES_BYTES} bytes; outputs dropped")
            result_vars, exit_code = variables, exit_code or 1
        log.say(f"job exited {exit_code}; {len(added)} variable(s) reported")
        uploaded = upload.flush(final=True)
        message = ResultMessage(
            run_id=run_id, step=step, token=env[contract.RESULT_TOKEN], exit_code=exit_code, variables=result_vars,
            log_tail=bounded_tail(log.tail.decode(errors="replace")),
            finished_at=datetime.now(UTC).isoformat(), log_uploaded=uploaded,
        )
        if not post_result(env, message.to_queue_text(), log, sleep):
            log.say("RESULT NOT DELIVERED: the run will be recorded as failed by the janitor")
        return 0


def entry(argv: list[str]) -> int:
    """The container's command: protect the credentials, then run `main` on this process's environment."""
    protected = contract.protect_process()
    env = dict(os.environ)
    for name in contract.RUNNER_SECRETS:  # what is still reachable in this process (the job never gets them)
        os.environ.pop(name, None)
    if not protected:
        print("[loadme-runner] warning: could not make the runner undumpable; a job under the same uid "
              "could read its credentials", flush=True)
    return main(argv, env)


if __name__ == "__main__":
    sys.exit(entry(sys.argv[1:]))
