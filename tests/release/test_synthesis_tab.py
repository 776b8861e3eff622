"""The synthesis tab's two comparability views, through the plugin's FastAPI app.

The restricted reports are made by the synthesis's own functions (evaluate, risk, suppress)
on a small release with a planted rare citizenship; the run's records (state, XCom, ledger)
are stood in for. Two signed-in users, with JWTs from Airflow's auth manager: a viewer, who
may read runs but not answer the release approval, sees the public view and one sentence
saying the restricted view is the data team's; a data-team user sees both. Neither page holds
the planted value, a count per value, a per-bucket figure or a sensitive share.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

RELEASE = "tab-2025"
RARE = "ZQX"  # a citizenship on one record: in the risk report's list of rare values
RUN_ID = "asset_triggered__tab"


def release_frame(rows: int = 300, seed: int = 5) -> pd.DataFrame:
    from ctdc_harmonizer.codebook import default_codebook

    codebook = default_codebook()
    rng = np.random.default_rng(seed)
    data = {}
    for var in codebook.variables:
        if var.type == "year":
            data[var.name] = pd.Series(rng.integers(2018, 2024, rows), dtype="Int64")
        elif var.type == "binary":
            data[var.name] = pd.Series(np.where(rng.random(rows) < 0.3, "1", None), dtype="string")
        else:
            allowed = ["UKR", "PHL", "IDN"] if var.type == "country" else var.allowed
            data[var.name] = pd.Series(rng.choice(allowed, rows), dtype="string")
    frame = pd.DataFrame(data)[codebook.columns]
    frame.loc[0, "citizenship"] = RARE
    return frame


@pytest.fixture(scope="module")
def run_folders(tmp_path_factory) -> dict:
    """The restricted and public folders a synthesis run of RELEASE leaves."""
    from ctdc_harmonizer.codebook import default_codebook
    from ctdc_harmonizer.synthesis import evaluate, fit
    from ctdc_harmonizer.synthesis.config import load_suppression_config, load_synthesis_config
    from ctdc_harmonizer.synthesis.risk import disclosure_risk
    from ctdc_harmonizer.synthesis.suppress import suppress

    codebook, config = default_codebook(), load_synthesis_config()
    root = tmp_path_factory.mktemp("synthesis_tab")
    restricted, public = root / "restricted" / RELEASE, root / "public" / RELEASE
    restricted.mkdir(parents=True)
    public.mkdir(parents=True)
    frame = release_frame()
    risk = disclosure_risk(frame, config.risk, load_suppression_config())
    assert RARE in json.dumps(risk), "the planted value is not in the risk report: vacuous"
    done = suppress(frame, load_suppression_config(), codebook)
    sensitive = fit.as_strings(done.frame, codebook)
    rng = np.random.default_rng(3)
    synthetic = sensitive.apply(lambda c: c.sample(frac=1, random_state=rng).to_numpy())
    truth = evaluate.combination_counts(sensitive, 3, codebook)
    noisy = (truth + rng.integers(-2, 3, len(truth))).clip(lower=0)
    report = evaluate.comparability(
        sensitive, {"own": synthetic}, noisy[noisy > 0].to_dict(), 3, codebook, [10, 100]
    )
    report = {"release": RELEASE, "published_sampler": "own", **report}
    for folder, name, payload in (
        (restricted, "comparability.json", report),
        (restricted, "risk_report.json", {"release": RELEASE, **risk}),
        (restricted, "suppression_report.json", done.report),
        (public, "comparability.json", evaluate.public_report(report, "own")),
    ):
        (folder / name).write_text(json.dumps(payload), "utf-8")
    (public / "synthetic.csv").write_text("gender\n", "utf-8")
    return {"restricted": restricted, "public": public, "report": report, "risk": risk}


@pytest.fixture
def client(run_folders, monkeypatch):
    """The plugin app with the run's records stood in for, and a token per user."""
    from airflow.api_fastapi.app import create_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.utils import db
    from ctdc_release_report import app
    from fastapi.testclient import TestClient

    db.upgradedb()  # the auth check looks the DAG's team up in the metadata database
    status = {
        "dag_id": app.SYNTHESIS_DAG_ID,
        "run_id": RUN_ID,
        "state": "success",
        "run_type": "asset_triggered",
        "run_after": "2026-01-02T00:00:00+00:00",
        "release": RELEASE,
        "plan": {},
        "steps": [{"step": "evaluate", "partner": None, "state": "success"}],
        "failures": [],
        "outcome": None,
        "healthy": None,
    }
    results = {
        "plan_synthesis": {
            "release": RELEASE,
            "restricted_dir": str(run_folders["restricted"]),
            "config": {"dp": {"epsilon": 4.0, "delta": 1e-6}},
        },
        "evaluate": {"report": "x", "mae_vs_dp_by_length": {"1": 1.5}},
        "publish": {"public_dir": str(run_folders["public"]), "rows": 300},
    }
    monkeypatch.setattr(app, "run_status", lambda dag_id, run_id: status)
    monkeypatch.setattr(app, "_xcoms", lambda dag_id, run_id, tasks: results)
    monkeypatch.setattr(
        app, "_ledger_totals", lambda plan: {"epsilon": 4.0, "delta": 1e-6, "fits": 1}
    )
    manager = create_auth_manager()
    tokens = {
        role: manager.generate_jwt(SimpleAuthManagerUser(username=f"a_{role}", role=role))
        for role in ("viewer", "user", "admin")
    }
    return TestClient(app.app), tokens


def tab(client, token: str) -> str:
    response = client.get(f"/runs/ctdc_synthesis/{RUN_ID}", cookies={"_token": token})
    assert response.status_code == 200, response.text[:300]
    assert response.text.startswith("<!doctype html>")
    return response.text


def assert_aggregates_only(page: str, run_folders: dict) -> None:
    """No planted value, no per-bucket figure, no share of the sensitive data."""
    assert RARE not in page
    assert "denominator" not in page and "bucket" not in page
    buckets = run_folders["report"]["count_buckets"]
    assert not any(f">{label}<" in page for label in buckets)


def test_a_viewer_sees_the_public_view_and_whom_the_restricted_one_is_for(client, run_folders):
    from ctdc_release_report.html import RESTRICTED_NOTE

    test_client, tokens = client
    page = tab(test_client, tokens["viewer"])
    assert "Comparability (public view)" in page
    public = run_folders["report"]["samplers"]["own"]["vs_dp_aggregates"]
    assert f'<td class="n">{public["1"]["combinations_reference"]}</td>' in page
    assert RESTRICTED_NOTE in page
    assert "restricted view)" not in page and "vs the sensitive data" not in page
    assert "records in the sensitive table" not in page and "records in them" not in page
    assert_aggregates_only(page, run_folders)


@pytest.mark.parametrize("role", ["user", "admin"])
def test_the_data_team_sees_the_restricted_view_too(client, run_folders, role):
    from ctdc_release_report.html import RESTRICTED_NOTE

    test_client, tokens = client
    page = tab(test_client, tokens[role])
    assert "Comparability (public view)" in page
    assert "Comparability (restricted view): synthetic data vs the sensitive data" in page
    assert RESTRICTED_NOTE not in page
    report = run_folders["report"]
    sensitive = report["samplers"]["own"]["vs_sensitive"]
    for length in ("1", "2", "3"):
        assert (
            f'<td class="n">{sensitive[length]["combinations_reference"]}</td>'
            f'<td class="n">{sensitive[length]["combinations_synthetic"]}</td>'
        ) in page, length
    fabricated = sum(sensitive[k]["only_in_synthetic"] for k in ("1", "2", "3"))
    assert fabricated > 0, "the shuffled sample fabricates nothing: the check is vacuous"
    assert f"{report['rows']['sensitive']} records in the sensitive table" in page
    risk = run_folders["risk"]
    assert re.search(
        rf"records in them</td><td class=\"n\">{risk['records_in_classes_below_k']}<", page
    )
    assert "cells set to null" in page
    assert_aggregates_only(page, run_folders)


def test_anonymous_and_forged_requests_are_refused(client):
    test_client, _ = client
    assert test_client.get(f"/runs/ctdc_synthesis/{RUN_ID}").status_code == 401
    forged = test_client.get(f"/runs/ctdc_synthesis/{RUN_ID}", cookies={"_token": "x.y.z"})
    assert forged.status_code in (401, 403)


def test_called_directly_the_page_shows_no_restricted_figure(client, run_folders):
    """Outside FastAPI (a direct call, as other tests make) nothing says yes."""
    from ctdc_release_report import app

    page = app.run_report_page("ctdc_synthesis", RUN_ID)
    assert "Comparability (restricted view)" not in page
    assert Path(run_folders["restricted"], "comparability.json").is_file()
