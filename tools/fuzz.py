"""`make fuzz`: schemathesis over the API's OpenAPI document, against a local stack of its own.

Starts Azurite (in memory) and the local host (`python -m devhost`, as `make dev` does) on free
ports of 127.0.0.1, runs schemathesis (from its own venv, .venv-fuzz) with a bounded number of
examples per operation and a time budget, then stops both. The property: no answer is a 5xx, and
every answer has the status, content type, headers and body the document gives it.

`POST /api/init_job` is left out: the local executor runs a request's command on this machine,
and a fuzzer's commands are random argv. Its parsing is fuzzed in-process by tests/test_fuzz.py.

Run by .venv's Python (it needs the app's packages); exits with schemathesis's status.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from devhost.azurite import free_port, start_azurite  # noqa: E402

CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,"
          "response_schema_conformance,negative_data_rejection")


def start_host(workdir: Path, connection: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    """The local host on a free port with the sample settings on this Azurite; waits until it is ready."""
    values = json.loads((REPO_ROOT / "local.settings.sample.json").read_text())["Values"]
    values.update({"AzureWebJobsStorage": connection, "LOCAL_EXECUTOR_DIR": str(workdir / "containers")})
    settings = workdir / "local.settings.json"
    settings.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    port, log_path = free_port(), workdir / "host.log"
    env = {k: v for k, v in os.environ.items() if k not in values}
    env["PYTHONPATH"] = str(REPO_ROOT)
    with open(log_path, "wb") as log:
        host = subprocess.Popen([sys.executable, "-m", "devhost", "--no-azurite", "--port", str(port),
                                 "--settings", str(settings)], cwd=REPO_ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    give_up = time.monotonic() + 120
    while "local host ready" not in log_path.read_text(errors="replace"):
        if host.poll() is not None or time.monotonic() > give_up:
            host.kill()
            sys.exit(f"the local host did not start:\n{log_path.read_text(errors='replace')[-3000:]}")
        time.sleep(0.5)
    return host, f"http://127.0.0.1:{port}/api", log_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/fuzz.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schemathesis", type=Path, default=REPO_ROOT / ".venv-fuzz" / "bin" / "schemathesis")
    parser.add_argument("--max-examples", type=int, default=int(os.environ.get("FUZZ_EXAMPLES", "40")),
                        help="test cases per operation and phase (FUZZ_EXAMPLES)")
    parser.add_argument("--max-time", type=int, default=int(os.environ.get("FUZZ_SECONDS", "600")),
                        help="the whole run's time budget in seconds (FUZZ_SECONDS)")
    parser.add_argument("--seed", type=int, default=None, help="repeat a run (schemathesis prints its seed)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="loadme-fuzz-") as tmp:
        workdir = Path(tmp)
        azurite = start_azurite(location=None, log_path=workdir / "azurite.log")
        host = None
        try:
            host, api, log_path = start_host(workdir, azurite.connection_string)
            command = [str(args.schemathesis.resolve()), "run", f"{api}/openapi.json", "--checks", CHECKS,
                       "--exclude-path", "/init_job", "--max-examples", str(args.max_examples),
                       "--max-time", str(args.max_time), "--request-timeout", "30", "--workers", "2",
                       "--suppress-health-check", "too_slow,filter_too_much", "--max-failures", "50",
                       *(["--seed", str(args.seed)] if args.seed is not None else [])]
            print("$", " ".join(command), flush=True)
            status = subprocess.run(command, cwd=workdir, check=False).returncode
            errors = [line for line in log_path.read_text(errors="replace").splitlines()
                      if " ERROR " in line or "Traceback" in line]
            if errors:
                print(f"the local host logged {len(errors)} error line(s); the last ones:", *errors[-10:], sep="\n")
            return status
        finally:
            if host is not None and host.poll() is None:
                host.send_signal(signal.SIGTERM)
                try:
                    host.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    host.kill()
                    host.wait()
            azurite.stop()


if __name__ == "__main__":
    sys.exit(main())
