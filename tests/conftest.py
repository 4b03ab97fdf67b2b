"""Shared fixtures: a real Azurite for the session, contexts on it, and the local host.

Azurite is started once per session (in memory, on free ports) and fails the session loudly if it
cannot start. Each test gets its own journal table, logs container and local executor folder.
Helpers are in tests/support.py.

Every test that reaches no Azurite is marked `unit` here (`make test-unit` runs those): derived from the
fixtures it uses, so the mark cannot go stale. Under pytest-xdist (`make test`) each worker is its own
process with its own session Azurite and its own ports, and each test file runs whole in one worker
(`--dist loadfile`), so a module's `stack` (or other module fixture) is set up once, and the files go out
in collection order (`--no-loadscope-reorder`): the long e2e modules first, the short files after them
fill the gaps, instead of a one-test e2e module starting last. (Not `--dist loadgroup`: with pytest 9.2
its xdist_group marks are silently ignored, pytest-dev/pytest-xdist#1386.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devhost.azurite import Azurite, start_azurite
from loadme.context import Context, set_context
from loadme.names import TRIGGER_QUEUES
from loadme.settings import Settings
from tests.support import Stack, app_settings, start_stack

# Fixtures that start an Azurite (directly or through the fixtures they use).
AZURITE_FIXTURES = frozenset({"azurite", "stack"})
# The longest files that need no Azurite (about 35 s and 25 s on two busy cores, the rest are under 11 s): they go
# out right after the e2e modules, so the short files fill the gaps around them (longest first) instead of one of
# them starting last while the other worker has nothing left to do (make test-unit, issue 24).
LONG_FILES = ("tests/test_scale.py", "tests/test_deploy_script.py")


def _send_order(item: pytest.Item) -> int:
    """0 for e2e tests, then the LONG_FILES, then the rest: files go to the xdist workers in this order."""
    if item.get_closest_marker("e2e") is not None:
        return 0
    path = item.nodeid.split("::", 1)[0]
    return 1 + LONG_FILES.index(path) if path in LONG_FILES else 1 + len(LONG_FILES)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `unit` each test that needs no Azurite: it uses none of AZURITE_FIXTURES, even through
    another fixture (`fixturenames` is the closure), and is not an e2e test (those start their own).
    Then order the files to be sent out longest first (LONG_FILES); a stable sort, so nothing else moves."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if not fixtures & AZURITE_FIXTURES and item.get_closest_marker("e2e") is None:
            item.add_marker(pytest.mark.unit)
    items.sort(key=_send_order)


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """A real Azurite for the whole session. Fails loudly if it cannot start."""
    log = tmp_path_factory.mktemp("azurite") / "azurite.log"
    server = start_azurite(location=None, log_path=log)
    yield server
    server.stop()


@pytest.fixture
def settings_env(azurite: Azurite, tmp_path: Path) -> dict[str, str]:
    """App settings for one test: its own table, logs container and executor folder."""
    return app_settings(azurite.connection_string, tmp_path / "containers")


@pytest.fixture
def context(settings_env: dict[str, str]) -> Iterator[Context]:
    """A Context on Azurite, installed as the process's context (handlers use it)."""
    ctx = Context(Settings.from_mapping(settings_env))
    ctx.storage.ensure_resources(list(TRIGGER_QUEUES))
    set_context(ctx)
    yield ctx
    set_context(None)
    executor = ctx.executor
    for group in executor.list_owned():
        executor.delete(group.name)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The local host for one test module on its own Azurite, every message delivered twice."""
    workdir = tmp_path_factory.mktemp("stack")
    storage = start_azurite(location=None, log_path=workdir / "azurite.log")
    env = app_settings(storage.connection_string, workdir / "containers")
    running = start_stack(env, workdir, "--duplicate-deliveries")
    yield running
    running.stop()
    storage.stop()
