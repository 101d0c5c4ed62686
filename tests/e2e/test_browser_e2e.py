"""End to end in a real browser: headless Chromium (Debian's, driven by Playwright) against a real local
Airflow (api-server, scheduler, dag-processor; LocalExecutor).

One test, step by step, with a screenshot per step under tests/artifacts/browser_e2e/:
log in through the simple auth manager's login page, open the DAG, trigger it through the Trigger form with
"Dry run" switched on, see the run succeed in the UI (and confirm through the REST API and the run history
that the run's conf had dry_run true), then open the plugin's status page from the "Device sync status" nav
link (an iframe inside the UI) and directly, and see its runs table and chart; finally answer a tripped
mass-delete guard's question (approve_mass_delete) with "Approve" on the task's Required Action page and see
the run apply it.

What counts as a page error (the test fails on any of them, listing them all):
- a document (page or iframe) answered with HTTP status >= 400, or any response >= 500 from the stack;
- an uncaught JavaScript exception (``pageerror``);
- a console message of type ``error``, except ``Failed to load resource ... 401`` before the login: the
  UI probes ``/ui/config`` while logged out, which is how it finds out it must show the login page;
- a visible text such as "Something went wrong" or "Internal Server Error" on a page checked by a step.

Needs /usr/bin/chromium (``scripts/ensure_test_tools.sh`` installs it); without it the test fails at once
(Playwright's own browser downloads are never used). Every wait is bounded.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from playwright.sync_api import ConsoleMessage, Frame, FrameLocator, Page, Response, expect, sync_playwright
from stack_helpers import set_paused, wait_until

from conftest import REPO, running_airflow_stack
from device_sync.demo import load_demo_fleet

DAG_ID = "device_parameter_sync"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = REPO / "tests" / "artifacts" / "browser_e2e"
ERROR_TEXTS = ("Something went wrong", "Internal Server Error", "Traceback (most recent call last)")
UI_TIMEOUT_MS = 60_000  # a busy 2-core machine renders slowly; every UI wait is bounded by this
RUN_TIMEOUT_S = 240


def chromium_present() -> bool:
    return CHROMIUM.is_file()


@pytest.fixture(scope="module")
def stack(moto_server: str) -> Iterator[Any]:
    if not chromium_present():  # no point starting Airflow: the test fails at once, saying how to get it
        yield None
        return
    with running_airflow_stack(("api-server", "scheduler", "dag-processor")) as stack:
        print(f"\nlocal Airflow stack healthy after {stack.start_seconds:.0f} s")
        yield stack


def load_fleet(stack: Any) -> None:
    with psycopg.connect(stack.data_url, autocommit=True) as conn:
        load_demo_fleet(
            conn, datetime.now(UTC).replace(second=0, microsecond=0), devices=40, parameters=20, per_device=5
        )


@pytest.fixture(scope="module")
def unpaused(stack: Any) -> None:
    """Demo data, the DAG unpaused, and the scheduled run that unpausing starts (catchup off: the latest
    hourly fire time) finished, so that the run the test triggers is the only one in flight. The fleet is
    then loaded afresh, so that the test's dry run has a delta to record."""
    if stack is None:
        return
    load_fleet(stack)
    token = stack.token("admin")
    set_paused(stack, token, False, timeout=120)
    runs: list[dict[str, Any]] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        _, body = stack.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?run_type=scheduled", token=token)
        runs = body.get("dag_runs", [])
        if runs and all(run["state"] in ("success", "failed") for run in runs):
            break
        time.sleep(2)
    else:
        raise TimeoutError(f"the scheduled run started by unpausing did not finish: {runs}")
    load_fleet(stack)


def task_state(stack: Any, token: str, run_id: str, task_id: str) -> str | None:
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}"
    _, ti = stack.request("GET", path, token=token)
    return ti.get("state") if isinstance(ti, dict) else None


class PageErrors:
    """Collects what counts as an error on the pages (see the module docstring)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.logged_in = False
        self.errors: list[str] = []

    def watch(self, page: Page) -> None:
        page.on("console", self.on_console)
        page.on("pageerror", lambda error: self.errors.append(f"uncaught exception: {error}"))
        page.on("response", self.on_response)

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        text = message.text
        if not self.logged_in and "Failed to load resource" in text and "401" in text:
            return  # the logged-out UI probing /ui/config before it shows the login page
        self.errors.append(f"console error: {text} at {message.location.get('url', '')}")

    def on_response(self, response: Response) -> None:
        is_document = response.request.resource_type == "document"
        if (is_document and response.status >= 400) or (
            response.status >= 500 and response.url.startswith(self.base_url)
        ):
            self.errors.append(f"HTTP {response.status} for {response.request.method} {response.url}")

    def check_text(self, where: Page | Frame | FrameLocator, step: str) -> None:
        body = where.locator("body").inner_text(timeout=UI_TIMEOUT_MS)
        for text in ERROR_TEXTS:
            if text in body:
                self.errors.append(f"{step}: the page shows {text!r}")

    def assert_none(self, step: str) -> None:
        assert not self.errors, f"errors by step {step!r}:\n" + "\n".join(self.errors)


def shoot(page: Page, name: str, shots: list[str]) -> None:
    path = ARTIFACTS / f"{len(shots) + 1:02d}_{name}.png"
    page.screenshot(path=str(path), full_page=True)
    shots.append(path.name)


def test_trigger_a_dry_run_from_the_ui_and_see_it_on_the_status_page(stack: Any, unpaused: None) -> None:
    assert chromium_present(), (
        f"{CHROMIUM} is missing: run scripts/ensure_test_tools.sh (as root) to install Debian's chromium, "
        "which this test drives through Playwright"
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):  # only this test's own screenshots from an earlier run
        old.unlink()
    base = stack.base_url
    token = stack.token("admin")
    errors = PageErrors(base)
    shots: list[str] = []
    started = time.monotonic()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        page: Page | None = None
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(UI_TIMEOUT_MS)
            page.set_default_navigation_timeout(UI_TIMEOUT_MS)
            errors.watch(page)

            # 1. Logged out, / leads to the simple auth manager's login page.
            response = page.goto(f"{base}/", wait_until="domcontentloaded")
            assert response is not None and response.status < 400
            page.wait_for_url(re.compile(r"/auth/login"))
            expect(page.get_by_role("heading", name="Sign into Airflow")).to_be_visible()
            page.get_by_label("Username").fill("admin")
            page.get_by_label("Password").fill(stack.passwords["admin"])
            shoot(page, "login", shots)
            errors.check_text(page, "login")
            errors.assert_none("login")

            # 2. Signed in: back on the home page.
            errors.logged_in = True
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(re.compile(r"^(?!.*/auth/login)"))
            expect(page.get_by_role("heading", name="Welcome")).to_be_visible()
            page.wait_for_load_state("networkidle")
            shoot(page, "home", shots)
            errors.check_text(page, "home")
            errors.assert_none("home")

            # 3. The DAG's page.
            response = page.goto(f"{base}/dags/{DAG_ID}", wait_until="domcontentloaded")
            assert response is not None and response.status < 400
            expect(page.get_by_role("heading", name=DAG_ID, exact=True)).to_be_visible()
            expect(page.get_by_role("link", name="compute_delta")).to_be_visible()
            page.wait_for_load_state("networkidle")
            shoot(page, "dag", shots)
            errors.check_text(page, "dag page")
            errors.assert_none("dag page")

            # 4. The Trigger form, with "Dry run" switched on (a Chakra switch: its input is visually hidden,
            # so the click goes to the switch's label, which toggles it like a user's click would).
            page.get_by_role("button", name="Trigger Dag").click()
            dialog = page.get_by_role("dialog")
            expect(dialog.get_by_role("heading", name=f"Trigger Dag - {DAG_ID}")).to_be_visible()
            dry_run = dialog.get_by_role("checkbox", name="Dry run")
            expect(dry_run).not_to_be_checked()
            dialog.locator("label", has=page.get_by_role("checkbox", name="Dry run")).click()
            expect(dry_run).to_be_checked()
            for other in ("Allow mass delete", "Force apply"):
                expect(dialog.get_by_role("checkbox", name=other)).not_to_be_checked()
            shoot(page, "trigger_form_dry_run_on", shots)
            errors.check_text(page, "trigger form")
            errors.assert_none("trigger form")

            # 5. Submit: the UI posts the run and opens its page.
            with page.expect_response(
                lambda r: r.request.method == "POST" and r.url.endswith(f"/api/v2/dags/{DAG_ID}/dagRuns")
            ) as posted:
                dialog.get_by_role("button", name="Trigger", exact=True).click()
            assert posted.value.status == 200, posted.value.text()
            run = posted.value.json()
            run_id = run["dag_run_id"]
            assert run["conf"]["dry_run"] is True, run["conf"]
            print(f"triggered {run_id} from the UI with conf {run['conf']}")
            page.wait_for_url(re.compile(r"/dags/" + DAG_ID + r"/runs/manual__"))
            header = page.get_by_test_id("header-card")
            expect(header.get_by_role("heading", name=run_id)).to_be_visible()
            shoot(page, "run_started", shots)

            # 6. The run succeeds: confirmed through the REST API, then seen in the UI.
            finished = stack.wait_for_run(DAG_ID, run_id, token, timeout=RUN_TIMEOUT_S)
            assert finished["state"] == "success", finished
            assert finished["conf"]["dry_run"] is True, finished["conf"]
            assert finished["run_type"] == "manual"
            with psycopg.connect(stack.data_url) as conn:
                history = conn.execute(
                    "SELECT dry_run, applied, status FROM device_sync.run_history WHERE run_id = %s", (run_id,)
                ).fetchone()
            assert history == (True, False, "success")
            response = page.reload(wait_until="domcontentloaded")
            assert response is not None and response.status < 400
            expect(page.get_by_test_id("header-card").get_by_test_id("state-badge")).to_have_text("Success")
            page.wait_for_load_state("networkidle")
            shoot(page, "run_success", shots)
            errors.check_text(page, "run page")
            errors.assert_none("run page")

            # 7. The status page through the nav link "Device sync status" (Browse menu): an iframe.
            page.get_by_role("button", name="Browse").click()
            page.get_by_role("menuitem", name="Device sync status").click()
            page.wait_for_url(re.compile(r"/plugin/device-sync"))
            frame = page.frame_locator("iframe")
            expect(frame.get_by_role("heading", name=DAG_ID)).to_be_visible()
            expect(frame.locator("table#runs")).to_be_visible()
            expect(frame.locator("svg#changes-chart")).to_be_visible()
            expect(frame.locator("table#runs tr", has_text=run_id)).to_be_visible()
            page.wait_for_load_state("networkidle")
            shoot(page, "status_page_in_ui", shots)
            errors.check_text(page, "status page in the UI")
            errors.check_text(frame, "status page iframe")
            errors.assert_none("status page in the UI")

            # 8. The status page on its own, with the dry run in its table.
            response = page.goto(f"{base}/device-sync/", wait_until="load")
            assert response is not None and response.status == 200, response and response.status
            expect(page.locator("svg#changes-chart")).to_be_visible()
            row = page.locator("table#runs tr", has_text=run_id)
            expect(row).to_be_visible()
            cells = row.locator("td").all_inner_texts()
            assert cells[2:5] == ["success", "True", "False"], cells  # status, dry_run, applied
            assert page.locator("svg#changes-chart polyline").count() == 3
            shoot(page, "status_page", shots)
            errors.check_text(page, "status page")
            errors.assert_none("status page")

            # 9. A run whose mass-delete guard trips asks in approve_mass_delete; approved in the UI's
            # Required Actions page of the task, it applies the mass delete.
            with psycopg.connect(stack.data_url, autocommit=True) as conn:
                conn.execute(
                    "INSERT INTO iot_data.device_parameters (device_id, device_name, parameter_id, parameter_name) "
                    "SELECT 'ghost-' || g, 'Ghost', 'p', 'Param' FROM generate_series(1, 2000) g"
                )
            status, asking = stack.request(
                "POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None}, token=token
            )
            assert status == 200, asking
            asking_id = asking["dag_run_id"]
            wait_until(
                lambda: task_state(stack, token, asking_id, "approve_mass_delete") == "awaiting_input",
                RUN_TIMEOUT_S,
                "the run whose mass-delete guard tripped never asked",
            )
            response = page.goto(
                f"{base}/dags/{DAG_ID}/runs/{quote(asking_id, safe='')}/tasks/approve_mass_delete/required_actions",
                wait_until="domcontentloaded",
            )
            assert response is not None and response.status < 400
            expect(page.get_by_text("approve deleting", exact=False).first).to_be_visible()
            approve = page.get_by_role("button", name="Approve")
            expect(approve).to_be_visible()
            page.wait_for_load_state("networkidle")
            shoot(page, "approval_question", shots)
            errors.check_text(page, "approval question")
            errors.assert_none("approval question")
            with page.expect_response(lambda r: r.request.method == "PATCH" and "hitlDetails" in r.url) as answered:
                approve.click()
            assert answered.value.status == 200, answered.value.text()
            finished = stack.wait_for_run(DAG_ID, asking_id, token, timeout=RUN_TIMEOUT_S)
            assert finished["state"] == "success", finished
            with psycopg.connect(stack.data_url) as conn:
                ghosts = conn.execute("SELECT count(*) FROM iot_data.device_parameters WHERE device_id LIKE 'ghost-%'")
                assert ghosts.fetchone() == (0,)
            page.reload(wait_until="domcontentloaded")
            page.wait_for_load_state("networkidle")
            shoot(page, "approval_answered", shots)
            errors.check_text(page, "approval answered")
            errors.assert_none("approval answered")
        except BaseException:
            if page is not None:
                try:
                    page.screenshot(path=str(ARTIFACTS / "failure.png"), full_page=True)
                    print(f"failure screenshot: {ARTIFACTS / 'failure.png'} (page {page.url})")
                except Exception as error:  # the browser may be gone; the original failure matters more
                    print(f"no failure screenshot: {error}")
            raise
        finally:
            browser.close()
    print(f"browser steps took {time.monotonic() - started:.0f} s; screenshots in {ARTIFACTS}: {', '.join(shots)}")
