"""Never spend epsilon for nothing (issue 19, item 5).

A release too small for its DP parameters is refused before pac-synth's fit, with a message
that says why, and leaves no ledger entry; one record more and it fits. An empty set of
aggregates never crashes a later step.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from test_synthesis import RELEASE, harmonized_frame, ledger_rows, synthesize, write_release

from ctdc_harmonizer.codebook import default_codebook
from ctdc_harmonizer.synthesis import fit as fit_mod
from ctdc_harmonizer.synthesis.config import load_synthesis_config
from ctdc_harmonizer.synthesis.guard import ReleaseTooSmall, minimum_records, one_count_threshold
from ctdc_harmonizer.synthesis.handoff import write_handoff

CODEBOOK = default_codebook()


def handoff_of(tmp_path: Path, rows: int) -> dict:
    frame = harmonized_frame(rows, seed=3)
    info = write_handoff(write_release(tmp_path / "out", frame))
    return {**info, "out": tmp_path / "out", "url": f"sqlite:///{tmp_path}/w.db"}


def edge(reporting_length: int) -> int:
    config = load_synthesis_config()
    params = config.dp.model_copy(update={"reporting_length": reporting_length})
    per = config.release_size.min_records_per_threshold
    return minimum_records(params, len(CODEBOOK.columns), per)


def test_threshold_matches_what_pacsynth_released_on_the_demo():
    # pac-synth's smallest released 1-count on the demo release was 43 (records of at most
    # 13 attributes at the 99th percentile): the threshold formula gives 41.8 there
    params = load_synthesis_config().dp
    assert one_count_threshold(params, 13) == pytest.approx(41.8, abs=0.1)
    assert one_count_threshold(params, 27) > one_count_threshold(params, 13)  # errs to refusing


def test_just_below_the_rule_is_refused_before_fit_and_spends_nothing(tmp_path, monkeypatch):
    rows = edge(2) - 1
    h = handoff_of(tmp_path, rows)

    def must_not_fit(*args, **kwargs):
        raise AssertionError("the fit ran for a release too small to publish anything")

    monkeypatch.setattr(fit_mod, "fit", must_not_fit)  # either engine
    monkeypatch.setattr(fit_mod, "fit_own", must_not_fit)
    with pytest.raises(ReleaseTooSmall) as refused:
        synthesize(h)
    message = str(refused.value)
    assert f"{rows} record(s) is too small" in message
    assert f"at least {rows + 1} records" in message and "no epsilon was spent" in message
    assert ledger_rows(h["url"]) == []
    assert not (h["out"] / "public").exists()


def test_the_issue_19_row_release_is_refused(tmp_path):
    h = handoff_of(tmp_path, 19)
    with pytest.raises(ReleaseTooSmall, match="19 record"):
        synthesize(h, reporting_length=3)
    assert ledger_rows(h["url"]) == []


def test_just_at_the_rule_fits_and_publishes(tmp_path):
    rows = edge(2)
    h = handoff_of(tmp_path, rows)
    result = synthesize(h)
    assert result["fit_aggregates"]["epsilon_spent_now"] == 12.0
    assert [r[9] for r in ledger_rows(h["url"])] == ["started", "spent"]
    assert Path(result["publish"]["public_dir"], "synthetic.csv").is_file()


def test_empty_aggregates_never_crash_a_later_step(tmp_path, monkeypatch):
    h = handoff_of(tmp_path, 400)

    def fit_releasing_nothing(data, dataset_sha256, params, codebook, threads, pacsynth_sample):
        empty = fit_mod.DpAggregates({}, 0, params, dataset_sha256)
        sample = pd.DataFrame(columns=codebook.columns) if pacsynth_sample else None
        return empty, sample, {"fit": 0.0}

    def own_fit_releasing_nothing(strings, dataset_sha256, params, codebook):
        return fit_mod.DpAggregates({}, 0, params, dataset_sha256), {"fit": 0.0}

    monkeypatch.setattr(fit_mod, "fit", fit_releasing_nothing)  # either engine
    monkeypatch.setattr(fit_mod, "fit_own", own_fit_releasing_nothing)
    result = synthesize(h)
    assert result["fit_aggregates"]["combinations"] == 0
    public = Path(result["publish"]["public_dir"])
    synthetic = pd.read_csv(public / "synthetic.csv", dtype=str, keep_default_na=False)
    assert list(synthetic.columns) == CODEBOOK.columns and synthetic.empty
    report = json.loads((public / "comparability.json").read_text("utf-8"))
    assert report["synthetic_records"] == 0
    restricted = h["out"].resolve() / "restricted" / RELEASE
    assert json.loads((restricted / "comparability.json").read_text("utf-8"))["rows"]["own"] == 0


def test_sampling_again_with_another_seed_reuses_the_aggregates(tmp_path):
    h = handoff_of(tmp_path, 400)
    first = synthesize(h)
    rows = ledger_rows(h["url"])
    again = synthesize(h, seed=99)  # sampling is post-processing of the stored aggregates
    assert again["fit_aggregates"]["reused"] is True
    assert again["fit_aggregates"]["epsilon_spent_now"] == 0.0
    assert ledger_rows(h["url"]) == rows
    assert (
        again["fit_aggregates"]["aggregates_sha256"] == first["fit_aggregates"]["aggregates_sha256"]
    )
    public = Path(again["publish"]["public_dir"], "synthetic.csv")
    assert pd.read_csv(public, dtype=str, keep_default_na=False).shape[1] == len(CODEBOOK.columns)
