"""Wide listings on the real local stack: a cheap request still answers promptly while ten of them run,
and none of them is answered with a 5xx or an untyped body."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from devhost.azurite import start_azurite
from tests.support import Stack, app_settings, start_stack

pytestmark = pytest.mark.e2e
LISTINGS = 10
PROMPT_SECONDS = 10.0  # generous: an unloaded status answer takes well under a second
SAMPLES = 5


@pytest.fixture
def wide_stack(tmp_path: Path) -> Iterator[Stack]:
    """A stack keeping ten years of runs: paging through the default range walks ~3650 day partitions
    (a page reads at most MAX_DAYS_PER_PAGE of them, so a listing is many requests)."""
    storage = start_azurite(location=None, log_path=tmp_path / "azurite.log")
    stack = start_stack(app_settings(storage.connection_string, tmp_path / "containers", RUN_RETENTION_DAYS="3650"),
                        tmp_path)
    yield stack
    stack.stop()
    storage.stop()


def test_status_answers_promptly_while_ten_wide_listings_run(wide_stack: Stack) -> None:
    answers: list[requests.Response] = []
    sampled = threading.Event()

    def list_wide() -> None:
        """Page through the whole range (or until status has been sampled), as a client that lists everything."""
        cursor = None
        while not sampled.is_set():
            params = {"state": "queued", **({"cursor": cursor} if cursor else {})}
            answer = requests.get(f"{wide_stack.base_url}/runs", params=params, timeout=280)
            answers.append(answer)
            if answer.status_code == 429:
                time.sleep(float(answer.headers.get("Retry-After", "1")))
                continue
            cursor = answer.json().get("next_cursor") if answer.status_code == 200 else None
            if cursor is None:
                return

    listings = [threading.Thread(target=list_wide, daemon=True) for _ in range(LISTINGS)]
    for listing in listings:
        listing.start()

    def running() -> bool:
        return any(listing.is_alive() for listing in listings)

    took: list[float] = []
    while running() and len(took) < SAMPLES:
        started = time.monotonic()
        status = requests.get(f"{wide_stack.base_url}/status", timeout=120)
        elapsed = time.monotonic() - started
        assert status.status_code == 200 and status.headers["Content-Type"].startswith("application/json")
        if running():  # a sample counts only when listings were in flight from before it to after it
            took.append(elapsed)
        time.sleep(0.5)
    assert len(took) == SAMPLES, "the listings ended before status could be sampled: make them wider"
    assert max(took) < PROMPT_SECONDS, f"status took {max(took):.1f}s while {LISTINGS} listings ran ({took})"

    sampled.set()
    for listing in listings:
        listing.join(timeout=280)
    assert not running() and len(answers) >= LISTINGS
    for answer in answers:
        assert answer.status_code in (200, 429), (answer.status_code, answer.text[:200])
        assert answer.headers["Content-Type"].startswith("application/json") and answer.json()
        if answer.status_code == 429:
            assert answer.headers["Retry-After"] and "too many" in answer.json()["error"]
    assert any(answer.status_code == 200 for answer in answers)
