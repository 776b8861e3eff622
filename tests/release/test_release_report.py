"""The release report (ctdc_harmonizer.report + the ctdc_release_report plugin): counts that
reconcile with the release, the change against the previous release, HTML with inline charts,
no identifier, and no answer without an authenticated Airflow user."""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest

from ctdc_harmonizer import samples
from ctdc_harmonizer.codebook import default_codebook
from ctdc_harmonizer.pipeline.local import run_annual_update
from ctdc_harmonizer.release import report

PARTNERS = ["hotline", "iom"]


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    """Two releases in one folder: 2024 with both partners, 2025 with a new IOM extract (the
    hotline carried forward)."""
    root = tmp_path_factory.mktemp("report")
    for partner in PARTNERS:
        samples.generate(partner, root / "landing", n=60, seed=11)
    out = root / "out"
    run_annual_update(str(root / "landing"), str(out), "2024", PARTNERS, workers=1)
    time.sleep(0.05)  # distinct modification times: the order of releases
    samples.generate("iom", root / "landing", n=70, seed=12)  # IOM's whole new dataset
    run_annual_update(
        str(root / "landing"), str(out), "2025", ["iom"], workers=1, accept_retirements=["iom"]
    )
    return root, out


def test_releases_are_listed_oldest_first_with_the_previous_one(releases):
    _, out = releases
    assert [r["release"] for r in report.releases(out)] == ["2024", "2025"]
    assert report.previous_release(out, "2025") == "2024"
    assert report.previous_release(out, "2024") is None


def test_report_counts_reconcile_with_the_release(releases):
    _, out = releases
    built = report.build(out / "2024")
    harmonized = pd.read_csv(out / "2024" / "harmonized.csv", dtype=str)
    recon = {r["partner"]: r for r in built["reconciliation"]}
    assert sorted(recon) == PARTNERS
    assert sum(r["harmonized"] for r in recon.values()) == len(harmonized) == built["rows"]
    for row in recon.values():
        outcomes = ("harmonized", "rejected", "excluded", "erased", "duplicates_merged")
        assert row["rows_read"] == sum(row[k] for k in outcomes)
    rejects = pd.read_csv(out / "2024" / "rejects.csv")
    assert sum(r["rows"] for r in built["rejects"]) == len(rejects)
    assert {"expectation", "success"} <= set(built["quality_results"][0])
    assert all("observed_value" not in r for r in built["quality_results"])


def test_change_against_the_previous_release(releases):
    _, out = releases
    change = report.build(out / "2025", out / "2024")["change"]
    assert change["previous"] == "2024"
    partners = {p["partner"]: p for p in change["partners"]}
    # The hotline did not deliver in 2025: carried forward, nothing lost.
    assert partners["hotline"]["delta"] == 0 and partners["hotline"]["released"] > 0
    assert partners["iom"]["delta"] != 0  # a new dataset
    by_variable: dict[str, int] = {}
    for row in change["variables"]:
        by_variable[row["variable"]] = by_variable.get(row["variable"], 0) + row["delta"]
    # Every variable has one value per row: the changes of each add up to the row change.
    assert set(by_variable.values()) == {partners["iom"]["delta"]}
    # As the codebook lists them: its variables in order, each one's values NULL first, then
    # the codebook's own order (age bins young to old), then unlisted ones ascending.
    codebook = default_codebook()
    variables = [var.name for var in codebook.variables]
    seen = [row["variable"] for row in change["variables"]]
    assert seen == sorted(seen, key=variables.index)
    ages = [row["value"] for row in change["variables"] if row["variable"] == "ageBroad"]
    bins = codebook.variable("ageBroad").allowed
    assert ages and ages == sorted(ages, key=lambda v: -1 if v == "(null)" else bins.index(v))


def test_values_are_listed_in_the_codebook_order():
    counts = pd.DataFrame(
        {
            "variable": ["ageBroad", "ageBroad", "ageBroad", "gender", "yearOfRegistration"],
            "value": ["9–17", "48+", "(null)", "Woman", "2019"],
        }
    )
    ordered = report.in_codebook_order(counts.iloc[::-1], default_codebook())
    names = [var.name for var in default_codebook().variables]
    assert list(ordered["variable"]) == sorted(counts["variable"], key=names.index)
    assert list(ordered.loc[ordered["variable"] == "ageBroad", "value"]) == [
        "(null)",
        "9–17",
        "48+",
    ]


def test_headline_is_markdown_counts(releases):
    _, out = releases
    head = report.headline(out / "2024")
    assert head["release"] == "2024" and head["report"] == str(out / "2024")
    assert head["partners"] == {
        r["partner"]: r["released"] for r in report.build(out / "2024")["reconciliation"]
    }
    assert "| hotline |" in head["body"] and "| iom |" in head["body"]
    json.dumps(head)  # travels through XCom


def test_report_page_has_charts_and_no_identifier(releases):
    from ctdc_release_report import html

    root, out = releases
    built = report.build(out / "2025", out / "2024")
    built["run"] = {"run_id": "r<1>", "state": "success", "approval": "success", "published": True}
    page = html.report_page(built)
    assert page.count("<svg") >= 3 and "<script" not in page and "http" not in page
    assert "r&lt;1&gt;" in page  # escaped
    # Published after a task marked success: the page does not claim someone approved it.
    assert "published</span> (approval: passed, no answer recorded)" in page
    answered = built | {"run": built["run"] | {"decision": {"chosen": ["Approve"], "by": "amira"}}}
    assert "published</span> (approval: approved by amira)" in html.report_page(answered)
    # The change against 2024: each partner's records before and now, in numbers.
    for row in built["change"]["partners"]:
        cells = [row["partner"], row["released_previous"], row["released"], row["delta"]]
        assert "".join(f'<td class="n">{c}</td>' for c in cells[1:]) in page, row["partner"]
    identifiers = set()
    for path in (root / "landing").rglob("*"):
        if path.suffix in {".csv", ".jsonl", ".json"}:
            text = path.read_text(encoding="utf-8", errors="ignore")
            identifiers |= {w for w in text.replace('"', " ").split() if "@" in w or "+" in w}
    assert identifiers, "no e-mail or phone found in the samples: the check would be vacuous"
    assert not [value for value in identifiers if value in page]


def test_endpoints_refuse_anonymous_and_forged_tokens():
    from ctdc_release_report.app import app
    from fastapi.testclient import TestClient

    client = TestClient(app)
    for path in (
        "/api/releases",
        "/releases",
        "/api/runs/ctdc_annual_update/manual__1",
        "/runs/ctdc_annual_update/manual__1",
    ):
        assert client.get(path).status_code == 401, path
    assert client.get("/api/releases", cookies={"_token": ""}).status_code == 401


def test_plugin_registers_the_run_view_and_the_nav_entry():
    from ctdc_release_report.plugin import CtdcReleaseReportPlugin

    views = {v["destination"]: v for v in CtdcReleaseReportPlugin.external_views}
    assert views["dag_run"]["href"] == "ctdc-report/runs/{DAG_ID}/{RUN_ID}"
    assert views["nav"]["href"] == "ctdc-report/releases"
    (fastapi_app,) = CtdcReleaseReportPlugin.fastapi_apps
    assert fastapi_app["url_prefix"] == "/ctdc-report"


def test_releases_page_folds_runs_per_release_and_keeps_what_is_published():
    """One row per release; a later failed rerun shows with its reason but does not hide the
    published figures; run ids link to the run and its tab."""
    from ctdc_release_report import html

    history = [  # newest first, as app._history gives them
        {
            "run_id": "manual__3",
            "run_after": "3",
            "state": "failed",
            "reason": "stage failed",
            "release": "2026",
            "rows": None,
            "partners": {},
            "approval": "upstream_failed",
            "published": False,
        },
        {
            "run_id": "manual__1",
            "run_after": "1",
            "state": "success",
            "reason": None,
            "release": "2026",
            "rows": 10,
            "partners": {"iom": 4},
            "approval": "success",
            "published": True,
        },
    ]
    page = html.history_page(history, "ctdc_annual_update")
    assert page.count("<tr><td>2026</td>") == 1
    assert '<td class="n">10</td>' in page
    # The published figures name the run that published them, not the failed rerun above.
    assert '<td>yes, by <a href="/dags/ctdc_annual_update/runs/manual__1"' in page
    assert "failed: stage failed" in page and "1 earlier run(s)" in page
    assert 'href="/dags/ctdc_annual_update/runs/manual__3"' in page
    assert 'href="/dags/ctdc_annual_update/runs/manual__1/plugin/release-report"' in page
    # Published by the run listed first: a plain yes.
    alone = html.history_page(history[1:], "ctdc_annual_update")
    assert "<td>yes</td>" in alone and "yes, by" not in alone


def test_the_approval_is_said_in_words_with_who_answered():
    """ApprovalOperator's task succeeds on "Reject" too: the recorded answer decides."""
    from ctdc_release_report import html

    rejected = {
        "run_id": "manual__2",
        "run_after": "2",
        "state": "success",
        "reason": None,
        "release": "2027",
        "rows": 12,
        "partners": {"iom": 12},
        "approval": "success",
        "decision": {"chosen": ["Reject"], "by": "amira"},
        "published": False,
    }
    page = html.history_page([rejected], "ctdc_annual_update")
    assert "<td>rejected by amira</td>" in page and ">success<" not in page
    approved = rejected | {"decision": {"chosen": ["Approve"], "by": "amira"}, "published": True}
    assert "<td>approved by amira</td>" in html.history_page([approved], "ctdc_annual_update")
    assert html.approval_text("upstream_failed") == "not asked: an earlier step failed"
    assert html.approval_text("awaiting_input").startswith("awaiting approval")
    assert html.approval_text(None) == "not asked yet"
    # Marked success (the demo's dag.test does): nobody answered, nobody is named.
    assert html.approval_text("success") == "passed, no answer recorded"


def test_a_run_without_report_gets_a_page_saying_why():
    from ctdc_release_report import html
    from ctdc_release_report.status import advice

    refused = {
        "task": "plan_release",
        "partner": None,
        "code": "ReleaseLockedError",
        "message": "release 2026 is awaiting approval in Airflow run 'a/b'",
    }
    status = {
        "state": "failed",
        "release": None,
        "run_id": "r",
        "run_type": "manual",
        "run_after": "t",
        "steps": [],
        "outcome": None,
        "failures": [refused | {"advice": advice(refused)}],
    }
    page = html.status_page(status)
    assert "Run refused: another run holds the store" in page
    assert "Answer its approval under Required actions" in page
    running = html.status_page(status | {"state": "running", "failures": [], "release": "7"})
    assert "Run of release 7: running" in running and "summarize_release" in running
    queued = html.status_page(status | {"state": "queued", "failures": []})
    assert "waiting for a free run slot" in queued


def test_a_failed_run_shows_the_healthy_partners_beside_the_failure():
    """One partner failed on data: its message, and the other partners' kept counts."""
    from ctdc_release_report import html
    from ctdc_release_report.status import advice

    failed = {
        "task": "partner.harmonize_partner",
        "partner": "iom",
        "code": "CoverageError",
        "message": "gender: 600 of 600 rows hold values the mapping does not know",
    }
    hotline = {
        "partner": "hotline",
        "files": 2,
        "reconciles": True,
        "rows_read": 600,
        "harmonized": 590,
        "rejected": 7,
        "excluded": 0,
        "erased": 2,
        "duplicates_merged": 1,
        "new": 590,
        "revised": 0,
        "unchanged": 0,
        "retired": 0,
        "current": 590,
    }
    status = {
        "state": "failed",
        "release": "2026",
        "run_id": "r",
        "run_type": "manual",
        "run_after": "t",
        "steps": [{"step": "partner.harmonize_partner", "partner": "iom", "state": "failed"}],
        "outcome": "release 2026 not published: partner.harmonize_partner failed for partner iom",
        "failures": [failed | {"advice": advice(failed)}],
        "healthy": {
            "release": "2026",
            "partners": [hotline],
            "rejected": [
                {"partner": "hotline", "reason": "invalid_year", "column": "year", "rows": 7}
            ],
        },
    }
    page = html.status_page(status)
    assert "failed for partner <b>iom</b>" in page and "A problem in the data" in page
    assert "The other partners' checked work" in page and "The chains of hotline succeeded" in page
    row = '<td>hotline</td><td class="n">2</td><td class="n">600</td><td class="n">590</td>'
    assert row in page and "<svg" in page
    assert '<td>invalid_year</td><td>year</td><td class="n">7</td>' in page
    # nothing kept (every partner failed, or the run failed before the chains): no section
    assert "checked work" not in html.status_page(status | {"healthy": None})
