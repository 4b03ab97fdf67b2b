"""The app as Azure's Python worker sees it: every function indexes under the pinned worker library.

The worker runs in its own process, fed the same FunctionRpc messages the Functions host sends, as
`make dev` runs it. One refused function fails the worker's whole metadata response in Azure, so
this is the check that the app would run at all. The deliberately wrong app proves the check can fail.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from devhost import rpc
from devhost.worker import WorkerChannel, WorkerRefused
from tests.support import REPO_ROOT, app_settings

ALWAYS = {"init_job", "run_status", "cancel_run", "list_runs", "run_logs", "run_stats", "poison_list",
          "poison_requeue", "poison_drop", "service_status", "dashboard", "openapi", "dq_init_job", "stage2",
          "remove_infra", "janitor"}


def _index(app_dir: Path, env: dict[str, str]) -> dict[str, typing.Any]:
    channel = WorkerChannel(app_dir, env)
    try:
        return {f.name: f for f in channel.start()}
    finally:
        channel.stop()


@pytest.mark.parametrize("schedule", ["", "0 0 * * * *"])
def test_every_function_indexes_under_the_real_worker(tmp_path: Path, schedule: str) -> None:
    env = app_settings("UseDevelopmentStorage=true", tmp_path / "containers",
                       SCHEDULED_INIT_SCHEDULE=schedule, JANITOR_SCHEDULE="0 */5 * * * *")
    functions = _index(REPO_ROOT, env)
    assert set(functions) == ALWAYS | ({"scheduled_init"} if schedule else set())
    triggers = {name: f.trigger["type"] for name, f in functions.items()}
    assert triggers["dq_init_job"] == "queueTrigger" and triggers["janitor"] == "timerTrigger"
    for function in functions.values():  # every queue output names the app's storage connection
        for output in function.outputs:
            if output["type"] == "queue":
                assert output["connection"] == "AzureWebJobsStorage", function.name


def test_a_function_the_worker_refuses_stops_indexing_with_the_workers_message(tmp_path: Path) -> None:
    with pytest.raises(WorkerRefused) as refused:
        _index(REPO_ROOT / "tests" / "apps" / "refused", {"PATH": "/usr/bin:/bin"})
    assert "binding out has invalid non-type annotation" in str(refused.value)
    assert "Out[list[str]]" in str(refused.value)


def test_every_queue_output_takes_a_list_so_the_host_sends_each_text_exactly() -> None:
    """The host re-parses a single JSON-looking string and rewrites it; list elements go as they are
    (devhost/newtonsoft.py). So every queue output of the app must be typed as a list of str."""
    from azure_functions_runtime.functions import Registry

    from tests.support import indexed_functions

    registry = Registry()
    checked = 0
    for function in indexed_functions().values():
        info = registry.add_indexed_function(function=function, protos=rpc)
        bindings = {json.loads(b)["name"]: json.loads(b) for b in function.get_raw_bindings()}
        for name, param in info.output_types.items():
            if bindings[name]["type"] == "queue":
                assert param.pytype == typing.List[str], (function.get_function_name(), name)  # noqa: UP006
                checked += 1
    assert checked >= 6


def test_indexing_imports_only_what_the_decorators_need() -> None:
    """Cold start: the worker imports function_app.py to index it; each function imports its handlers
    when it first runs, so indexing loads no Azure SDK beyond azure.functions and only the light part of
    loadme (`make bench` times it against bare azure.functions)."""
    code = "import sys, function_app; print(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                            check=True).stdout.split()
    assert sorted(m for m in loaded if m.startswith("loadme")) == [
        "loadme", "loadme.context", "loadme.contract", "loadme.errors", "loadme.loading", "loadme.names",
        "loadme.settings",
        "loadme.variables", "loadme.web"]
    sdks = ("azure.core", "azure.storage", "azure.data", "azure.identity", "azure.mgmt", "requests")
    assert [m for m in loaded if m.startswith(sdks)] == []


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # its parent is not a package: `name` is an attribute
        return False


def _lazy_imports(path: Path) -> set[str]:
    """The modules imported inside functions in `path` (`from a import b` counts a.b when b is a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.FunctionDef):
            continue
        for inner in ast.walk(node):
            if isinstance(inner, ast.Import):
                found.update(alias.name for alias in inner.names)
            elif isinstance(inner, ast.ImportFrom) and inner.module and inner.level == 0:
                found.add(inner.module)
                found.update(f"{inner.module}.{alias.name}" for alias in inner.names
                             if _is_module(f"{inner.module}.{alias.name}"))
    return found


def _loaded_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after importing function_app and running `code`."""
    script = f"import sys, function_app; from loadme import loading; {code}; print(' '.join(sys.modules))"
    return set(subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                              check=True).stdout.split())


def test_the_first_call_of_any_function_imports_everything_under_one_lock() -> None:
    """The worker runs functions on a thread pool; two first calls importing azure.core at once can get a
    half-initialized module (seen under load). So each function first calls `load_all()`, which imports,
    under one lock, every module imported lazily anywhere in the app but the ACI management SDKs; those
    the ACI executor loads under the same lock where it builds its clients, so only it pays for them."""
    functions = [node for node in ast.walk(ast.parse((REPO_ROOT / "function_app.py").read_text()))
                 if isinstance(node, ast.FunctionDef) and any(
                     isinstance(d, ast.Call) and ast.unparse(d.func).startswith("app.") for d in node.decorator_list)]
    assert len(functions) >= 16
    for function in functions:
        first = function.body[1] if ast.get_docstring(function) else function.body[0]
        assert ast.unparse(first) == "load_all()", f"{function.name} does not call load_all() first"

    aci = REPO_ROOT / "loadme" / "executors" / "aci.py"
    sources = [REPO_ROOT / "function_app.py", *(REPO_ROOT / "loadme").rglob("*.py")]
    lazy = set().union(*(_lazy_imports(path) for path in sources if path != aci))
    loaded = _loaded_after("loading.load_all()")
    assert sorted(lazy - loaded) == []
    assert sorted(m for m in loaded if m.startswith("azure.mgmt")) == []  # HTTP functions never pay for them

    clients = next(node for node in ast.walk(ast.parse(aci.read_text()))
                   if isinstance(node, ast.FunctionDef) and node.name == "_clients")
    assert ast.unparse(clients.body[1]) == "load(ACI_MODULES)", "_clients does not load ACI_MODULES first"
    assert sorted(_lazy_imports(aci) - _loaded_after("loading.load_all(); loading.load(loading.ACI_MODULES)")) == []
