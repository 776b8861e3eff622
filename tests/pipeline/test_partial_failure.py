"""A failed run keeps its healthy partners' counts (pipeline/annual_update/partial.py).

The partner chains run in-process for two partners; what `outcome` hands over from XCom is
stood in for: the chains' last results over the mapped instances, a failed one as None, and
the lone value xcom_pull gives when only one instance has a result.
"""

from __future__ import annotations

import json
import logging

import pytest

PARTNERS = ["ctdc_legacy", "hotline"]


@pytest.fixture(scope="module")
def chains(tmp_path_factory):
    """The plan and both partners' chain results (as XCom holds them); finished after."""
    from ctdc_harmonizer import samples
    from ctdc_harmonizer.pipeline.airflow import to_xcom
    from ctdc_harmonizer.pipeline.annual_update import partner_chain as chain
    from ctdc_harmonizer.run.finish import finish_run
    from ctdc_harmonizer.run.plan import plan_release

    landing, out = tmp_path_factory.mktemp("landing"), tmp_path_factory.mktemp("out")
    for partner in PARTNERS:
        samples.generate(partner, landing, n=60, seed=4)
    plan = plan_release(str(landing), str(out), "partial-2025", partners=PARTNERS)
    results = {}
    try:
        for partner in PARTNERS:
            staged = chain.stage_partner(plan, partner)
            checked = chain.check_staged_contract(plan, staged)
            harmonized = chain.harmonize_partner(plan, checked)
            codebook_checked = chain.check_codebook_contract(plan, harmonized)
            results[partner] = to_xcom(chain.compare_with_store(plan, codebook_checked))
        yield to_xcom(plan), results, landing
    finally:
        finish_run(plan)


def test_each_healthy_partner_is_counted_and_reconciles(chains):
    from ctdc_harmonizer.pipeline.airflow import kept_partner_reports

    plan, results, _ = chains
    kept = kept_partner_reports(plan, [results["ctdc_legacy"], None, results["hotline"]])
    assert [p["partner"] for p in kept["partners"]] == PARTNERS
    for row in kept["partners"]:
        assert row["rows_read"] > 0 and row["reconciles"] is True
        outcomes = ("harmonized", "rejected", "excluded", "erased", "duplicates_merged")
        assert row["rows_read"] == sum(row[k] for k in outcomes)
        assert row["current"] == results[row["partner"]]["current"]
    rejected = {(r["partner"], r["reason"], r["column"]): r["rows"] for r in kept["rejected"]}
    assert all(n > 0 for n in rejected.values())
    by_partner = {p["partner"]: p["rejected"] for p in kept["partners"]}
    for partner in PARTNERS:
        assert sum(n for (p, _, _), n in rejected.items() if p == partner) == by_partner[partner]
    assert set(json.loads(json.dumps(kept))) == {"release", "partners", "rejected"}


def test_the_lone_result_of_one_instance_is_taken_as_a_list_of_one(chains):
    from ctdc_harmonizer.pipeline.airflow import kept_partner_reports

    plan, results, _ = chains
    kept = kept_partner_reports(plan, results["hotline"])
    assert [p["partner"] for p in kept["partners"]] == ["hotline"]
    assert kept_partner_reports(plan, None) is None  # every chain failed
    assert kept_partner_reports(None, [results["hotline"]]) is None  # never planned


def test_nothing_from_the_delivery_is_kept(chains):
    """Counts, reason codes and column names only: no cell of the delivered files."""
    from ctdc_harmonizer.pipeline.airflow import kept_partner_reports

    plan, results, landing = chains
    kept = json.dumps(kept_partner_reports(plan, list(results.values())))
    cells = set()
    for path in landing.rglob("*"):
        if path.suffix in {".csv", ".jsonl"}:
            text = path.read_text(encoding="utf-8", errors="ignore")
            cells |= {c.strip('"') for c in text.replace("\n", ",").split(",") if len(c) > 8}
    assert cells, "no long cell in the samples: the check would be vacuous"
    assert [c for c in cells if c in kept] == []


def test_a_report_that_cannot_be_read_never_replaces_the_reason(chains, caplog):
    from ctdc_harmonizer.pipeline.airflow import kept_partner_reports

    plan, results, _ = chains
    gone = {**results["hotline"], "work": str(results["hotline"]["work"]) + "-gone"}
    with caplog.at_level(logging.WARNING, logger="ctdc.airflow"):
        assert kept_partner_reports(plan, [gone]) is None
    assert "healthy partners' reports not kept" in caplog.text


def test_outcome_names_the_failing_partner_and_the_kept_ones():
    from ctdc_harmonizer.errors import CtdcError
    from ctdc_harmonizer.pipeline.airflow import release_outcome

    failed = {
        "task": "partner.stage_partner",
        "partner": "iom",
        "code": "ExtractError",
        "message": "iom: file 'x.csv': column 'mimosa_gender' missing",
    }
    with pytest.raises(CtdcError) as said:
        release_outcome(None, None, None, [failed], ["ctdc_legacy", "hotline"])
    text = str(said.value)
    assert "partner.stage_partner failed for partner iom [ExtractError]" in text
    assert "the checked work of ctdc_legacy, hotline is reported" in text
    with pytest.raises(CtdcError) as alone:
        release_outcome(None, None, None, [failed])
    assert "checked work" not in str(alone.value)
