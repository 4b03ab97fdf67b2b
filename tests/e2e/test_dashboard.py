"""The web dashboard in a real headless Chromium (Debian's, driven by Playwright) on the local stack.

What a user does: enter a key once, start a run and watch it succeed in the table, open it (timeline,
steps, variables, logs), find what failed today and why, cancel a long run, requeue and drop poison
messages, read the stats chart. The page is served by the app itself, under its content security
policy; a console error or a script error fails the test.

Each test leaves a screenshot in the session's artifact folder (printed; also copied to
$LOADME_ARTIFACTS when set). `LOADME_DOCS_SCREENSHOT=1` also rewrites docs/dashboard.png, the
README's picture of the runs view.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests

from loadme.api import start_request_from_object
from loadme.names import INITJOB_QUEUE, REMOVEINFRA_QUEUE, poison_queue
from loadme.runs import start_run
from tests.browser import CHROMIUM_ARGS, ensure_chromium, ensure_playwright
from tests.support import REPO_ROOT, SECRET_VALUE, Stack, wait_until

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]  # the first test may install Chromium

RUN_TIMEOUT_MS = 90_000  # generous: a run takes seconds, but this machine is shared and small
UI_TIMEOUT_MS = 20_000
AUTH_ITEM = "loadme.dashboard.auth"


# ---- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium and Playwright, both installed first if missing (never skipped)."""
    path = ensure_chromium()
    ensure_playwright()
    return path


@pytest.fixture(scope="module")
def browser(chromium: Path) -> Iterator[Browser]:
    """Chromium under Playwright for this module's tests (it quits before the other modules run)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("dashboard-screenshots")
    print(f"dashboard screenshots: {folder}")
    return folder


def keep_screenshot(page: Page, artifacts: Path, name: str, full_page: bool = True) -> Path:
    """A screenshot in the artifact folder (and in $LOADME_ARTIFACTS when set)."""
    path = artifacts / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    if os.environ.get("LOADME_ARTIFACTS"):
        target = Path(os.environ["LOADME_ARTIFACTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / path.name)
    return path


@pytest.fixture
def page(browser: Browser, artifacts: Path, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh browser session (its own sessionStorage) on a desktop-sized page. After the test: its
    screenshot is kept, and any script error or console error (a CSP violation is one) fails it."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    opened = context.new_page()
    problems: list[str] = []
    opened.on("pageerror", lambda error: problems.append(f"script error: {error}"))

    def console(message: Any) -> None:
        # A 4xx answer the test provoked is logged by Chromium as a failed resource; anything else is not expected.
        if message.type == "error" and not re.match(r"Failed to load resource: .* status of 4\d\d", message.text):
            problems.append(f"console error: {message.text}")

    opened.on("console", console)
    yield opened
    keep_screenshot(opened, artifacts, request.node.name)
    context.close()
    assert not problems, problems


def expect() -> Any:
    from playwright.sync_api import expect as playwright_expect

    playwright_expect.set_options(timeout=UI_TIMEOUT_MS)
    return playwright_expect


def open_dashboard(page: Page, stack: Stack, key: str = "test-key", view: str = "") -> None:
    """Open the dashboard as a new user does: the page asks for a key once."""
    page.goto(f"{stack.base_url}/dashboard/{view}")
    expect()(page.locator("#auth-dialog")).to_be_visible()
    page.fill("#auth-key", key)
    page.click("#use-key")
    expect()(page.locator("#auth-dialog")).to_be_hidden()


def run_row(page: Page, run_id: str) -> Locator:
    return page.locator(f'#runs-body tr[data-run-id="{run_id}"]')


def start_via_api(stack: Stack, variables: dict[str, str]) -> str:
    response = stack.post_run({"variables": variables})
    assert response.status_code == 202, response.text
    return str(response.json()["run_id"])


# ---- the function key ----------------------------------------------------------------------------
def test_the_key_is_asked_once_kept_in_the_tab_and_sent_with_every_call(stack: Stack, page: Page) -> None:
    calls: list[tuple[str, str | None]] = []
    page.on("request", lambda r: calls.append((r.url, r.headers.get("x-functions-key")))
            if "/api/" in r.url and "/api/dashboard/" not in r.url else None)
    open_dashboard(page, stack, key="k-0123456789")
    expect()(page.locator("table.runs caption")).to_be_visible()
    expect()(page.locator("#auth-state")).to_have_text("function key set (this tab only)")
    assert "k-0123456789" in page.evaluate(f"sessionStorage.getItem('{AUTH_ITEM}')")
    assert page.evaluate("localStorage.length") == 0
    assert page.evaluate("document.cookie") == ""

    page.reload()  # asked once: the session keeps it
    expect()(page.locator("table.runs caption")).to_be_visible()
    expect()(page.locator("#auth-dialog")).to_be_hidden()
    wait_until(lambda: len(calls) >= 2, 10, "the API calls of two page loads")
    assert all(key == "k-0123456789" for _, key in calls), calls
    assert not any("k-0123456789" in url for url, _ in calls)  # a header, never in a URL

    page.click("#forget-key")
    expect()(page.locator("#auth-dialog")).to_be_visible()
    assert page.evaluate(f"sessionStorage.getItem('{AUTH_ITEM}')") is None


def test_a_refused_key_asks_again_and_api_errors_are_shown_in_one_line(stack: Stack, page: Page) -> None:
    open_dashboard(page, stack)
    page.click("details.start summary")
    page.fill("#start-variables", "___RunId=mine")
    page.click("#start-run")
    message = page.locator("#message.error .text")
    expect()(message).to_have_text("POST /init_job: 400 variable ___RunId is reserved: the orchestrator sets it")

    page.route(lambda url: "/api/runs" in url,
               lambda route: route.fulfill(status=401, content_type="application/json",
                                           body=json.dumps({"error": "wrong key"})))
    page.click("#failed-today")
    # A wrong key, or an expired Microsoft sign-in when Entra ID is in front: the page asks for the key
    # again and offers Microsoft's sign-in page, which sends the user back to the dashboard.
    expect()(page.locator("#auth-dialog")).to_be_visible()
    assert (page.get_attribute("#entra-login", "href")
            == "/.auth/login/aad?post_login_redirect_uri=%2Fapi%2Fdashboard%2F")
    expect()(message).to_have_text(
        "GET /runs: 401 wrong key (enter a valid function key, or sign in with Microsoft again)")


# ---- runs: start, watch, open --------------------------------------------------------------------
def test_a_run_started_from_the_page_succeeds_in_the_table_and_its_page_shows_it(
        stack: Stack, page: Page, artifacts: Path) -> None:
    open_dashboard(page, stack)
    page.click("details.start summary")
    page.fill("#start-variables", "___Name=Dashboard\n___Team=web")
    page.click("#start-run")
    expect()(page.locator("#message[data-run-id]")).to_be_visible()
    run_id = page.get_attribute("#message", "data-run-id")
    assert run_id and re.fullmatch(r"[0-9a-f]{32}", run_id)

    # The table refreshes itself: no reload, the row goes from queued/running to succeeded.
    state = run_row(page, run_id).locator("[data-state]")
    expect()(state).to_have_attribute("data-state", "succeeded", timeout=RUN_TIMEOUT_MS)

    run_row(page, run_id).locator("a.run-id").click()
    expect()(page.locator("#run-id")).to_have_text(run_id)
    # The page follows the run until its container is removed.
    expect()(page.locator('#timeline-body tr[data-event="removed"]')).to_be_visible(timeout=RUN_TIMEOUT_MS)
    events = page.locator("#timeline-body tr").evaluate_all("rows => rows.map(r => r.dataset.event)")
    assert events == ["requested", "deploying", "started", "result", "terminal", "logs_archived", "removed"]
    expect()(page.locator('#timeline-body tr[data-event="terminal"]')).to_contain_text("state=succeeded")
    expect()(page.locator("#run-summary [data-state]")).to_have_attribute("data-state", "succeeded")
    expect()(page.locator("#steps-body")).to_contain_text("python jobs/demo_job.py")
    expect()(page.locator("#steps-body")).to_contain_text("exit 0")
    expect()(page.locator('#variables-body tr[data-variable="___Message"] td.value')).to_have_text("Hello, Dashboard!")
    expect()(page.locator('#variables-body tr[data-variable="___Team"] td.value')).to_have_text("web")
    log = page.locator('#logs section[data-step="1"]')
    expect()(log.locator("pre")).to_contain_text("demo job: Hello, Dashboard!")
    expect()(log.locator(".source")).to_have_text("(archived log)")
    expect()(page.locator("#cancel-run")).to_be_disabled()
    assert SECRET_VALUE not in page.content()
    keep_screenshot(page, artifacts, "run-page")

    # Secret variables (the status document's `secrets`): shown by name, never with a value, even one
    # that should never have been there.
    def with_secrets(route: Any) -> None:
        status = route.fetch().json()
        status["secrets"] = ["___ApiToken"]
        status["variables"]["___ApiToken"] = "must-never-be-shown"
        route.fulfill(json=status)

    page.route(lambda url: url.endswith(f"/api/runs/{run_id}"), with_secrets)
    page.reload()
    secret = page.locator('#variables-body tr[data-variable="___ApiToken"]')
    expect()(secret).to_have_attribute("data-secret", "true")
    expect()(secret).to_contain_text("secret value not shown")
    assert "must-never-be-shown" not in page.content()


def test_what_failed_today_and_why(stack: Stack, page: Page) -> None:
    failed = start_via_api(stack, {"___Name": "Broken", "___DemoExitCode": "3"})
    fine = start_via_api(stack, {"___Name": "Fine"})
    assert stack.wait_for_run(failed)["state"] == "failed"
    assert stack.wait_for_run(fine)["state"] == "succeeded"

    open_dashboard(page, stack)
    page.click("#failed-today")
    expect()(page).to_have_url(re.compile(r"#/runs\?state=failed&since=today$"))
    expect()(page.locator("#filter-state")).to_have_value("failed")
    row = run_row(page, failed)
    expect()(row.locator(".reason")).to_have_text("step 1 exited 3")
    expect()(row).to_contain_text("3")
    expect()(run_row(page, fine)).to_have_count(0)
    states = page.locator("#runs-body [data-state]").evaluate_all("nodes => nodes.map(n => n.dataset.state)")
    assert states and set(states) == {"failed"}

    row.locator("a.run-id").click()
    expect()(page.locator("#run-reason")).to_have_text("step 1 exited 3")
    expect()(page.locator('#logs section[data-step="1"] pre')).to_contain_text("job exited 3")


def test_the_runs_table_pages_with_the_cursor(stack: Stack, page: Page) -> None:
    for name in ("Page1", "Page2", "Page3"):
        start_via_api(stack, {"___Name": name})
    newest = requests.get(f"{stack.base_url}/runs", params={"limit": "4"}, timeout=30).json()["runs"]
    open_dashboard(page, stack, view="#/runs?limit=2")
    rows = page.locator("#runs-body tr[data-run-id]")
    expect()(rows).to_have_count(2)
    expect()(page.locator("#newer")).to_be_disabled()
    first = rows.evaluate_all("rows => rows.map(r => r.dataset.runId)")
    assert first == [run["run_id"] for run in newest[:2]]
    page.click("#older")
    expect()(page.locator(".page")).to_have_text("Page 2")
    expect()(rows.first).not_to_have_attribute("data-run-id", first[0])
    assert rows.evaluate_all("rows => rows.map(r => r.dataset.runId)") == [run["run_id"] for run in newest[2:4]]
    page.click("#newer")
    expect()(rows.first).to_have_attribute("data-run-id", first[0])


def test_auto_refresh_can_be_paused_and_resumed(stack: Stack, page: Page) -> None:
    open_dashboard(page, stack)
    expect()(page.locator("#runs-updated")).to_contain_text("Updated")
    page.uncheck("#auto-refresh")
    expect()(page.locator("#runs-updated")).to_contain_text("(auto-refresh paused)")
    listed: list[str] = []
    page.on("request", lambda r: listed.append(r.url) if "/api/runs?" in r.url else None)
    run_id = start_via_api(stack, {"___Name": "Unseen"})
    stack.wait_for_run(run_id)
    assert listed == [] and run_row(page, run_id).count() == 0  # paused: nothing fetched, nothing changed
    page.check("#auto-refresh")
    expect()(run_row(page, run_id).locator("[data-state]")).to_have_attribute("data-state", "succeeded")
    expect()(page.locator("#runs-updated")).not_to_contain_text("paused")


# ---- cancel --------------------------------------------------------------------------------------
def test_a_long_run_is_cancelled_from_its_page(stack: Stack, page: Page) -> None:
    run_id = start_via_api(stack, {"___Name": "Sleepy", "___DemoSleepSeconds": "600"})
    open_dashboard(page, stack)
    run_row(page, run_id).locator("a.run-id").click()
    summary_state = page.locator("#run-summary [data-state]")
    expect()(summary_state).to_have_attribute("data-state", "running", timeout=RUN_TIMEOUT_MS)
    expect()(page.locator('#logs section[data-step="1"] .source')).to_have_text("(live: the container is running)")

    page.once("dialog", lambda dialog: dialog.dismiss())  # the confirmation: "no" changes nothing
    page.click("#cancel-run")
    assert stack.status(run_id)["state"] == "running"

    asked: list[str] = []

    def confirm(dialog: Any) -> None:
        asked.append(dialog.message)
        dialog.accept()

    page.once("dialog", confirm)
    page.click("#cancel-run")
    expect()(summary_state).to_have_attribute("data-state", "cancelled")
    assert asked and run_id in asked[0]
    expect()(page.locator("#message .text")).to_have_text(f"Run {run_id} cancelled.")
    expect()(page.locator("#cancel-run")).to_be_disabled()
    status = stack.wait_for_run(run_id)
    assert (status["state"], status["cleaned_up"]) == ("cancelled", True)


# ---- poison queues -------------------------------------------------------------------------------
def test_poison_messages_are_requeued_and_dropped_from_the_page(stack: Stack, page: Page) -> None:
    ctx = stack.context
    # A run whose first message failed every delivery and was poisoned (as tests/test_operations.py does).
    request = start_request_from_object({"variables": {"___Name": "Requeued"}}, ctx.settings, ctx.variables)
    started = start_run(ctx, request, "http")
    assert started.message is not None
    run_id = started.run_id
    ctx.journal.note_failure(run_id, 1, INITJOB_QUEUE, "TransientError: ACI answered 503 ServiceUnavailable", 5)
    ctx.storage.queue(poison_queue(INITJOB_QUEUE)).send_message(started.message.to_json())
    ctx.storage.raw_queue(poison_queue(REMOVEINFRA_QUEUE)).send_message("### not base64")

    open_dashboard(page, stack, view="#/poison")
    expect()(page.locator("#poison-count")).to_have_text("2")
    poisoned = page.locator("#poison-initjob tr[data-message-id]")
    expect()(poisoned).to_have_count(1)
    expect()(poisoned).to_contain_text("TransientError: ACI answered 503 ServiceUnavailable")
    expect()(poisoned.locator("a.run-id")).to_have_attribute("href", f"#/runs/{run_id}")
    poisoned.get_by_role("button", name=re.compile("^Requeue")).click()
    expect()(page.locator("#message .text")).to_contain_text("requeued to initjob")
    expect()(poisoned).to_have_count(0)
    status = stack.wait_for_run(run_id, timeout=RUN_TIMEOUT_MS / 1000)  # the retry deploys and finishes it
    assert status["state"] == "succeeded"
    assert "requeued" in [e["event"] for e in status["events"]]

    junk = page.locator("#poison-removeinfra tr[data-message-id]")
    expect()(junk).to_contain_text("cannot be decoded: message is not valid base64")
    page.once("dialog", lambda dialog: dialog.accept())
    junk.get_by_role("button", name=re.compile("^Drop")).click()
    expect()(page.locator("#message .text")).to_contain_text("dropped")
    expect()(junk).to_have_count(0)
    expect()(page.locator("#poison-count")).to_be_hidden()
    assert requests.get(f"{stack.base_url}/status", timeout=30).json()["poison_queues"] == {
        queue: {"depth": 0, "oldest_age_seconds": None} for queue in
        ("initjob-poison", "stage2-poison", "removeinfra-poison")}


# ---- stats ---------------------------------------------------------------------------------------
def test_stats_chart_runs_per_day_with_success_rate_and_durations(stack: Stack, page: Page) -> None:
    stack.wait_for_run(start_via_api(stack, {"___Name": "Counted"}))
    open_dashboard(page, stack, view="#/stats")
    today = datetime.now(UTC).date().isoformat()
    bar = page.locator(f'svg.chart g.day-bar[data-date="{today}"]')
    expect()(bar.locator("rect.bar").first).to_be_visible()
    expect()(page.locator("svg.chart g.day-bar")).to_have_count(7)

    def agree() -> bool:  # the page's numbers are the API's (runs of other tests may still be ending)
        stats = requests.get(f"{stack.base_url}/stats", params={"days": "7"}, timeout=30).json()
        page.reload()
        expect()(bar).to_have_attribute("data-total", re.compile(r"\d+"))
        shown_total = int(bar.get_attribute("data-total") or -1)
        stacked = sum(int(n) for n in bar.locator("rect.bar").evaluate_all("rs => rs.map(r => r.dataset.count)"))
        rate = f"{stats['success_rate'] * 100:.1f} %"
        return (shown_total == stats["days"][-1]["total"] == stacked
                and page.locator("#stat-total").inner_text() == str(stats["total"])
                and page.locator("#stat-success").inner_text() == rate)

    wait_until(agree, 60, "the stats page to show the API's numbers", interval=1)
    expect()(page.locator("#stat-p50")).not_to_have_text("—")
    expect()(page.locator("#stat-p95")).not_to_have_text("—")


# ---- the README's picture ------------------------------------------------------------------------
def test_runs_view_screenshot(stack: Stack, page: Page, artifacts: Path) -> None:
    """The runs view as the README shows it (after the tests above, runs of every outcome are there)."""
    start_via_api(stack, {"___Name": "Screenshot", "___DemoSleepSeconds": "600"})  # one still running
    open_dashboard(page, stack)
    expect()(page.locator('#runs-body [data-state="running"]').first).to_be_visible(timeout=RUN_TIMEOUT_MS)
    page.set_viewport_size({"width": 1280, "height": 720})
    page.mouse.move(1279, 719)  # no row highlighted under the pointer
    path = keep_screenshot(page, artifacts, "runs-view", full_page=False)
    if os.environ.get("LOADME_DOCS_SCREENSHOT"):
        shutil.copy(path, REPO_ROOT / "docs" / "dashboard.png")
    for running in requests.get(f"{stack.base_url}/runs", params={"state": "running"}, timeout=30).json()["runs"]:
        requests.delete(f"{stack.base_url}/runs/{running['run_id']}", timeout=30)
