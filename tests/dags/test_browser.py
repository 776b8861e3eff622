"""The data team's first hour, in a real browser (Debian's Chromium, `make browser-deps`).

Real Airflow processes as `make airflow-ui` starts them (scripts/airflow_local.py: api-server,
scheduler, dag-processor, triggerer; LocalExecutor) on a throw-away PostgreSQL database, the
demo's sample deliveries (four partners, 600 records each) and no SMTP connection. From an
empty state, in the browser:

1. both DAGs are active and no run exists (nothing runs by itself);
2. *Trigger* with the form left empty; the approval request appears (timed);
3. the run's *Release report* tab shows the report;
4. a second *Trigger* (same empty form) fails at once in `plan_release`, its tab naming the
   run awaiting approval;
5. *Approve* under Required actions; `ctdc_synthesis` starts by itself on the release asset,
   and its tab shows the epsilon spent (approve -> public dataset timed) and, to the admin
   (who may approve releases), the restricted comparability view;
6. a partner's broken delivery (a renamed column) beside a healthy one (new hotline
   reports): the run's tab names the step, the partner and the message, and shows the
   hotline's checked counts;
7. the CTDC releases page lists the runs, folded per release, with the failed run's reason.

No page visited shows raw JSON; at the end the DAGs hold exactly the runs asked for.
Screenshots and the timings go to $CTDC_TEST_ARTIFACTS (default tests/artifacts/, ignored by
git). Settings for a shared machine: CTDC_TEST_DB_PREFIX, CTDC_TEST_PORT. `make test-e2e`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from support.deployment import (
    CHROMIUM,
    REPO_ROOT,
    Api,
    deployment_env,
    launched,
    logged_in_page,
    throwaway_database,
    wait_for,
)

pytestmark = pytest.mark.processes

ANNUAL, SYNTHESIS = "ctdc_annual_update", "ctdc_synthesis"
ARTIFACTS = Path(os.environ.get("CTDC_TEST_ARTIFACTS") or REPO_ROOT / "tests" / "artifacts")


@pytest.fixture(scope="module")
def database():
    with throwaway_database("browser") as url:
        yield url


@pytest.fixture(scope="module")
def deployment(database, tmp_path_factory):
    """`make airflow-ui`'s launcher on the demo's deliveries; yields (base, api, paths)."""
    from ctdc_harmonizer import samples

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not installed (make browser-deps)")
    pytest.importorskip("playwright")
    home = tmp_path_factory.mktemp("browser-home")
    landing = home / "ctdc" / "landing"
    samples.generate_all(landing, seed=2025)  # what `make demo` generates
    env = deployment_env(home, database, None, AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5")
    # SIGTERM: what a service manager sends (the launcher's stop test covers Ctrl-C)
    with launched(home, env, stop=signal.SIGTERM) as up:
        yield up.base, up.api, {"home": home, "password": up.password}


@pytest.fixture(scope="module")
def page(deployment):
    base, _, paths = deployment
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with logged_in_page(base, paths["password"]) as tab:
        yield tab


def no_raw_json(page) -> None:
    """Neither the page nor any frame in it is a JSON document or an error detail."""
    for frame in page.frames:
        with contextlib.suppress(Exception):  # a frame may be navigating away
            text = frame.locator("body").inner_text(timeout=5_000).strip()
            assert not text.startswith(("{", "[")), (frame.url, text[:200])
            assert '{"detail"' not in text, (frame.url, text[:200])


def shot(page, name: str) -> None:
    no_raw_json(page)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def runs(api: Api, dag_id: str) -> list[dict]:
    found = api.json("GET", f"/api/v2/dags/{dag_id}/dagRuns")["dag_runs"]
    return sorted(found, key=lambda r: r["run_after"])


def trigger_with_empty_form(page, base: str, api: Api) -> str:
    """Trigger the annual update from its page, leaving every field empty; the new run's id."""
    before = {r["dag_run_id"] for r in runs(api, ANNUAL)}
    page.goto(f"{base}/dags/{ANNUAL}")
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("button", name="Trigger").last.wait_for(timeout=30_000)
    if not (ARTIFACTS / "0_trigger_form.png").exists():
        page.screenshot(path=str(ARTIFACTS / "0_trigger_form.png"), full_page=True)
    dialog.get_by_role("button", name="Trigger").last.click()
    return wait_for(
        "the triggered run",
        lambda: next(
            (r["dag_run_id"] for r in runs(api, ANNUAL) if r["dag_run_id"] not in before), None
        ),
        60,
        every=1,
    )


def ti_state(api: Api, dag_id: str, run_id: str, task_id: str) -> str | None:
    response = api.get(
        f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}"
    )
    return response.json().get("state") if response.status_code == 200 else None


def run_state(api: Api, dag_id: str, run_id: str) -> str:
    return api.json("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}")["state"]


def open_tab(page, base: str, dag_id: str, run_id: str, expect: str) -> None:
    page.goto(f"{base}/dags/{dag_id}/runs/{quote(run_id, safe='')}/plugin/release-report")
    page.frame_locator("iframe").first.get_by_text(expect).first.wait_for(timeout=60_000)


def test_the_first_hour(deployment, page):
    from ctdc_harmonizer import samples

    base, api, paths = deployment
    timings: dict[str, float] = {}
    wait_for(
        "both DAGs parsed",
        lambda: all(api.get(f"/api/v2/dags/{d}").status_code == 200 for d in (ANNUAL, SYNTHESIS)),
        180,
    )
    # 1. Active from the start, and nothing ran by itself.
    for dag_id in (ANNUAL, SYNTHESIS):
        assert api.json("GET", f"/api/v2/dags/{dag_id}")["is_paused"] is False
        assert runs(api, dag_id) == []

    # 2. Trigger with an empty form; the approval request appears.
    started = time.monotonic()
    first = trigger_with_empty_form(page, base, api)
    wait_for(
        "the approval request",
        lambda: ti_state(api, ANNUAL, first, "approve") == "awaiting_input",
        600,
        every=1,
    )
    timings["trigger_to_approval_s"] = round(time.monotonic() - started, 1)
    release = str(
        api.json("GET", f"/api/v2/dags/{ANNUAL}/dagRuns/{quote(first, safe='')}")["conf"].get(
            "release"
        )
        or ""
    )
    assert release == ""  # the form was left empty: the label is the default rule's

    # 3. The release report tab of the run awaiting approval.
    open_tab(page, base, ANNUAL, first, "Reconciliation per partner")
    shot(page, "1_release_report_awaiting_approval")

    # 4. A duplicate trigger is refused at once, with its reason on its tab.
    duplicate_at = time.monotonic()
    duplicate = trigger_with_empty_form(page, base, api)
    wait_for("the duplicate to fail", lambda: run_state(api, ANNUAL, duplicate) == "failed", 180)
    timings["duplicate_refused_s"] = round(time.monotonic() - duplicate_at, 1)
    assert ti_state(api, ANNUAL, duplicate, "plan_release") == "failed"
    open_tab(page, base, ANNUAL, duplicate, "is awaiting approval in Airflow run")
    frame_text = page.frame_locator("iframe").first.locator("body").inner_text()
    assert f"{ANNUAL}/{first}" in frame_text and "Answer its approval" in frame_text
    shot(page, "2_duplicate_refused")

    # 5. Approve in the Required actions panel; synthesis starts by itself.
    hitl = f"/api/v2/dags/{ANNUAL}/dagRuns/{quote(first, safe='')}/taskInstances/approve/-1"
    subject = api.json("GET", f"{hitl}/hitlDetails")["subject"]
    page.goto(f"{base}/dags/{ANNUAL}/runs/{quote(first, safe='')}/required_actions")
    page.get_by_text(subject).first.click(timeout=60_000)
    page.get_by_text("records before").first.wait_for(timeout=30_000)
    page.get_by_role("button", name="Approve").first.wait_for(timeout=60_000)
    shot(page, "3_approval_panel")
    approved_at = time.monotonic()
    page.get_by_role("button", name="Approve").first.click()
    with contextlib.suppress(Exception):  # a panel that asks to confirm the chosen option
        page.get_by_role("button", name="Respond").first.click(timeout=3_000)
    wait_for("the release to publish", lambda: run_state(api, ANNUAL, first) == "success", 600)
    synthesis = wait_for("the synthesis run", lambda: runs(api, SYNTHESIS), 180)
    assert [r["run_type"] for r in synthesis] == ["asset_triggered"]
    synth_id = synthesis[0]["dag_run_id"]
    wait_for("the public dataset", lambda: run_state(api, SYNTHESIS, synth_id) == "success", 900)
    timings["approve_to_public_dataset_s"] = round(time.monotonic() - approved_at, 1)
    open_tab(page, base, SYNTHESIS, synth_id, "ε spent by this run")
    frame = page.frame_locator("iframe").first
    frame_text = frame.locator("body").inner_text()
    assert "succeeded" in frame_text and "synthetic.csv" in frame_text
    shot(page, "4_synthesis_tab")
    # The admin may approve releases: the restricted view (vs the sensitive data) is shown.
    assert "is for the data team" not in frame_text
    restricted = frame.get_by_text("Comparability (restricted view)").first
    restricted.scroll_into_view_if_needed(timeout=10_000)
    assert "records in the sensitive table" in frame_text
    shot(page, "4b_synthesis_tab_restricted_view")

    # 6. A partner's broken delivery: the failed run's tab names partner and message.
    iom = paths["home"] / "ctdc" / "landing" / "iom"
    source = next(iom.glob("iom_case_export_*.csv"))
    header, rest = source.read_text(encoding="utf-8").split("\n", 1)
    renamed = header.replace('"mimosa_gender"', '"gender_mimosa"')
    (iom / "iom_case_export_2026.csv").write_text(f"{renamed}\n{rest}", encoding="utf-8")
    fresh = paths["home"] / "fresh-hotline"
    samples.generate("hotline", fresh, n=200, seed=2026)  # 200 new reports: a healthy chain
    reports = (fresh / "hotline" / "hotline_reports_2025.jsonl").read_bytes()
    (paths["home"] / "ctdc" / "landing" / "hotline" / "hotline_reports_2026.jsonl").write_bytes(
        reports
    )
    broken = trigger_with_empty_form(page, base, api)
    wait_for("the broken run to fail", lambda: run_state(api, ANNUAL, broken) == "failed", 600)
    open_tab(page, base, ANNUAL, broken, "Why this run failed")
    frame = page.frame_locator("iframe").first
    frame_text = frame.locator("body").inner_text()
    assert "for partner iom" in frame_text and "What to do:" in frame_text
    shot(page, "5_failed_run_tab")
    # The hotline's chain succeeded (and the chains of carried partners whose held-back
    # records were harmonized again): their counts are kept and shown beside iom's message.
    assert re.search(r"the checked work of [a-z_, ]*hotline[a-z_, ]* is reported", frame_text)
    healthy = frame.get_by_text("The other partners' checked work").first
    healthy.scroll_into_view_if_needed(timeout=10_000)
    assert re.search(r"The chains of [a-z_, ]*hotline[a-z_, ]* succeeded", frame_text)
    shot(page, "5b_failed_run_healthy_partners")

    # 7. The releases page: one row per release, runs linked, the failure's reason.
    page.goto(f"{base}/ctdc-report/releases")
    page.get_by_text("CTDC releases").first.wait_for(timeout=30_000)
    text = page.locator("body").inner_text()
    assert "earlier run(s)" in text and "failed: " in text
    # A failure is headed by the task as the grid names it, not by the function it called.
    assert "failed: plan_release: release" in text and "plan_scheduled_release" not in text
    # The approval in words, with who gave it (the admin approved in step 5).
    assert "approved by admin" in text and "not asked: an earlier step failed" in text
    assert page.locator(f'a[href*="{quote(first, safe="")}"]').count() >= 1
    shot(page, "6_releases_page")

    # No unrequested run: three triggered, one synthesis on the asset.
    assert sorted(r["run_type"] for r in runs(api, ANNUAL)) == ["manual"] * 3
    assert len(runs(api, SYNTHESIS)) == 1
    # Quiet without SMTP: alerts are off, and no log says an ERROR about it.
    logs = "".join(
        f.read_text(encoding="utf-8", errors="ignore")
        for f in (paths["home"] / "logs").rglob("*")
        if f.is_file()
    )
    assert "SMTP connection is not found" not in logs
    assert "alerts are off" in logs
    (ARTIFACTS / "timings.json").write_text(json.dumps(timings, indent=2), encoding="utf-8")
    print(f"first hour timings: {timings}")
