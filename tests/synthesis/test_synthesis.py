"""The synthesis side of the hand-off: contract, ledger, sampler, reports, public folder.

Small releases (a few hundred rows) and reporting length 2 keep pac-synth's fit to a second.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from ctdc_harmonizer.codebook import default_codebook
from ctdc_harmonizer.errors import CtdcError
from ctdc_harmonizer.harmonize.contracts import harmonized_schema_for
from ctdc_harmonizer.pipeline import local
from ctdc_harmonizer.pipeline.synthesis import SYNTHESIS
from ctdc_harmonizer.synthesis import fit as fit_mod
from ctdc_harmonizer.synthesis import plan as steps
from ctdc_harmonizer.synthesis.config import (
    BudgetConfig,
    DpParams,
    load_suppression_config,
    load_synthesis_config,
)
from ctdc_harmonizer.synthesis.evaluate import combination_counts, compare, shares
from ctdc_harmonizer.synthesis.handoff import HandoffError, verify_handoff, write_handoff
from ctdc_harmonizer.synthesis.ledger import BudgetExceeded, Ledger
from ctdc_harmonizer.synthesis.risk import disclosure_risk
from ctdc_harmonizer.synthesis.sample import SamplerSettings, sample
from ctdc_harmonizer.synthesis.suppress import suppress

CODEBOOK = default_codebook()
RELEASE = "synth-2025"
# A record no public file may show: a citizenship held by one record (rare-value rule).
CANARY_CITIZENSHIP = "ISL"


def harmonized_frame(rows: int = 400, seed: int = 7) -> pd.DataFrame:
    """A release-shaped table: skewed categories, correlated binaries, one canary record."""
    rng = np.random.default_rng(seed)
    data: dict[str, pd.Series] = {}
    for var in CODEBOOK.variables:
        if var.type == "year":
            data[var.name] = pd.Series(rng.integers(2015, 2024, rows), dtype="Int64")
        elif var.type == "binary":
            data[var.name] = pd.Series(np.where(rng.random(rows) < 0.3, "1", None), dtype="string")
        else:
            allowed = ["UKR", "PHL", "IDN", "MDA", "KHM"] if var.type == "country" else var.allowed
            weights = np.linspace(3, 1, len(allowed))
            picked = rng.choice(allowed, rows, p=weights / weights.sum())
            missing = rng.random(rows) < 0.1
            data[var.name] = pd.Series(np.where(missing, None, picked), dtype="string")
    frame = pd.DataFrame(data)[CODEBOOK.columns]
    frame.loc[0, "citizenship"] = CANARY_CITIZENSHIP
    return frame


def write_release(root: Path, frame: pd.DataFrame, release: str = RELEASE) -> Path:
    """The parts of a release folder the hand-off reads: harmonized.parquet, metadata.json."""
    folder = root / release
    folder.mkdir(parents=True)
    frame.to_parquet(folder / "harmonized.parquet", index=False)
    codebook_bytes = Path(CODEBOOK.source_path).read_bytes()
    meta = {
        "release": release,
        "release_year": 2025,
        "codebook": {
            "title": CODEBOOK.title,
            "version": CODEBOOK.version,
            "file": Path(CODEBOOK.source_path).name,
            "sha256": hashlib.sha256(codebook_bytes).hexdigest(),
        },
        "partners": {"iom": {"mapping_sha256": "0" * 64}},
    }
    (folder / "metadata.json").write_text(json.dumps(meta), encoding="utf-8")
    return folder


@pytest.fixture
def handed_off(tmp_path: Path) -> dict:
    frame = harmonized_frame()
    info = write_handoff(write_release(tmp_path / "out", frame))
    return {**info, "out": tmp_path / "out", "frame": frame, "url": f"sqlite:///{tmp_path}/w.db"}


def unaccounted_config(folder: Path) -> str:
    """The synthesis config letting a hand-off the store does not hold be fitted (these
    tests hand off releases made by hand; tests/privacy/test_person_ledger.py covers the
    store's)."""
    path = folder / "synthesis_unaccounted.yaml"
    if not path.is_file():
        text = (Path(CODEBOOK.source_path).parent / "synthesis_v1.yaml").read_text("utf-8")
        text = text.replace("release_not_in_store: refuse", "release_not_in_store: fit_unaccounted")
        path.write_text(text, encoding="utf-8")
    return str(path)


def synthesize(h: dict, **overrides) -> dict:
    kwargs = {
        "reporting_length": 2,
        "warehouse_url": h["url"],
        "config_path": unaccounted_config(h["out"].parent),
        **overrides,
    }
    done = local.run(SYNTHESIS, release=RELEASE, out=str(h["out"]), **kwargs)
    return {name: r.model_dump() if hasattr(r, "model_dump") else r for name, r in done.items()}


def ledger_rows(url: str) -> list[tuple]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM privacy_budget_ledger ORDER BY id")).fetchall()
    engine.dispose()
    return [tuple(r) for r in rows]


# --- the hand-off contract ---------------------------------------------------------------------


def test_handoff_holds_exactly_table_and_manifest(handed_off):
    folder = Path(handed_off["handoff"])
    assert sorted(p.name for p in folder.iterdir()) == ["harmonized.parquet", "manifest.json"]
    manifest = json.loads((folder / "manifest.json").read_text("utf-8"))
    assert manifest["rows"] == handed_off["rows"] == 400
    assert manifest["columns"] == CODEBOOK.columns
    digest = hashlib.sha256((folder / "harmonized.parquet").read_bytes()).hexdigest()
    assert manifest["files"] == {"harmonized.parquet": digest}
    manifest_digest = hashlib.sha256((folder / "manifest.json").read_bytes()).hexdigest()
    assert handed_off["manifest_sha256"] == manifest_digest
    assert verify_handoff(folder, RELEASE, manifest_digest).rows == 400
    release_dir = folder.parent.parent / RELEASE  # <out>/handoff/<release> beside <out>/<release>
    assert write_handoff(release_dir)["manifest_sha256"] == manifest_digest  # reproducible


def test_one_changed_byte_is_refused_and_nothing_is_published(handed_off):
    table = Path(handed_off["handoff"]) / "harmonized.parquet"
    data = bytearray(table.read_bytes())
    data[len(data) // 2] ^= 0x01
    table.write_bytes(bytes(data))
    with pytest.raises(HandoffError, match="SHA-256 does not match the manifest"):
        synthesize(handed_off)
    assert not (handed_off["out"] / "public").exists()


def test_renamed_column_is_refused_even_with_a_matching_manifest(handed_off):
    folder = Path(handed_off["handoff"])
    table = pq.read_table(folder / "harmonized.parquet")
    names = ["sex" if n == "gender" else n for n in table.column_names]
    pq.write_table(table.rename_columns(names), folder / "harmonized.parquet")
    manifest = json.loads((folder / "manifest.json").read_text("utf-8"))
    manifest["files"]["harmonized.parquet"] = hashlib.sha256(
        (folder / "harmonized.parquet").read_bytes()
    ).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(HandoffError, match=r"columns differ from the codebook.*'gender'"):
        synthesize(handed_off)
    assert not (handed_off["out"] / "public").exists()


def test_extra_file_and_other_release_are_refused(handed_off):
    folder = Path(handed_off["handoff"])
    with pytest.raises(HandoffError, match="another release"):
        verify_handoff(folder, "other-2025")
    with pytest.raises(HandoffError, match="asset event"):
        verify_handoff(folder, RELEASE, "f" * 64)
    (folder / "notes.txt").write_text("x", encoding="utf-8")
    with pytest.raises(HandoffError, match="files differ from the manifest"):
        verify_handoff(folder, RELEASE)


def test_plan_follows_the_asset_event_not_a_folder(handed_off):
    event = {k: handed_off[k] for k in ("release", "rows", "handoff", "manifest_sha256")}
    plan = steps.plan_synthesis(event=event)
    assert plan.release == RELEASE
    assert plan.expected_manifest_sha256 == handed_off["manifest_sha256"]
    assert plan.out == str(handed_off["out"].resolve())
    with pytest.raises(CtdcError, match="differs from the release of the triggering"):
        steps.plan_synthesis(release="other-2025", event=event)
    with pytest.raises(CtdcError, match="no release named"):
        steps.plan_synthesis(out=str(handed_off["out"]))
    # Queued events of several releases: the newest is synthesized, the others superseded.
    newer = {**event, "release": "other-2026"}
    chosen = steps.event_release([event, {**event}, newer])
    assert chosen["release"] == "other-2026" and chosen["superseded"] == [RELEASE]
    assert steps.event_release([event, event])["superseded"] == []
    assert steps.plan_synthesis(event=steps.event_release([newer, event])).superseded == [
        "other-2026"
    ]


# --- privacy budget ---------------------------------------------------------------------------


def test_second_synthesis_spends_nothing_and_reuses_the_aggregates(handed_off):
    first = synthesize(handed_off)
    assert first["fit_aggregates"]["reused"] is False
    assert first["fit_aggregates"]["epsilon_spent_now"] == 12.0
    rows = ledger_rows(handed_off["url"])
    assert [r[9] for r in rows] == ["started", "spent"]  # outcome column
    second = synthesize(handed_off)
    assert second["fit_aggregates"]["reused"] is True
    assert second["fit_aggregates"]["epsilon_spent_now"] == 0.0
    assert second["fit_aggregates"]["epsilon_spent_release"] == 12.0
    assert (
        second["fit_aggregates"]["aggregates_sha256"]
        == first["fit_aggregates"]["aggregates_sha256"]
    )
    assert ledger_rows(handed_off["url"]) == rows  # unchanged


def test_over_budget_is_refused_before_fit(handed_off, monkeypatch):
    synthesize(handed_off)  # 12 of the lifetime 24
    rows = ledger_rows(handed_off["url"])

    def must_not_fit(*args, **kwargs):
        raise AssertionError("the fit ran although the budget was exceeded")

    monkeypatch.setattr(fit_mod, "fit", must_not_fit)  # either engine
    monkeypatch.setattr(fit_mod, "fit_own", must_not_fit)
    with pytest.raises(BudgetExceeded, match="refused before fit"):
        synthesize(handed_off, epsilon=13.0)  # other parameters: would be a new spend
    assert ledger_rows(handed_off["url"]) == rows


def test_a_fit_that_fails_after_drawing_noise_is_counted_as_spent(handed_off, monkeypatch):
    from ctdc_harmonizer.synthesis import noisy_aggregates

    def noisy_count_not_positive(records, epsilon, rng):
        rng.laplace(0.0, 1.0 / epsilon)  # the noise is drawn, then the count is refused
        raise noisy_aggregates.AggregationError("the noisy record count", noise_drawn=True)

    monkeypatch.setattr(noisy_aggregates, "protect_record_count", noisy_count_not_positive)
    with pytest.raises(fit_mod.FitError, match="counts as spent although nothing was kept"):
        synthesize(handed_off)
    assert [r[9] for r in ledger_rows(handed_off["url"])] == ["started"]  # counted, not failed
    assert Ledger(handed_off["url"]).spent(RELEASE)[0] == 12.0
    assert not (handed_off["out"] / "public" / RELEASE).exists()


def test_a_fit_refused_before_any_noise_spends_nothing(handed_off, monkeypatch):
    def refused(*args, **kwargs):
        raise fit_mod.FitError("DP aggregation failed: the parameters", noise_drawn=False)

    monkeypatch.setattr(fit_mod, "fit_own", refused)
    with pytest.raises(fit_mod.FitError, match="the parameters"):
        synthesize(handed_off)
    assert [r[9] for r in ledger_rows(handed_off["url"])] == ["started", "failed"]
    assert Ledger(handed_off["url"]).spent(RELEASE)[0] == 0.0


def test_a_stale_staging_folder_never_passes_into_stored_aggregates(tmp_path):
    folder = tmp_path / "aggregates" / "k"
    stale = folder.with_name("k.tmp")
    stale.mkdir(parents=True)
    (stale / fit_mod.PACSYNTH_SAMPLE_FILE).write_text("gender\nWoman\n", encoding="utf-8")
    params = DpParams(epsilon=5.0, delta=1e-7, reporting_length=2)
    aggregates = fit_mod.DpAggregates({"gender:Woman": 40}, 41, params, "x", "own")
    digest = fit_mod.save(aggregates, folder, None)
    assert fit_mod.load_pacsynth_sample(folder) is None
    assert fit_mod.load(folder, digest).engine == "own"


def test_crash_mid_fit_counts_as_spent_and_a_failed_fit_does_not(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path}/l.db")
    params = DpParams(epsilon=5.0, delta=1e-7, reporting_length=2)
    budget = BudgetConfig(lifetime_epsilon=12.0, lifetime_delta=1e-6)
    ledger.start("r", "a" * 64, params)  # never closed: a crash
    failed = ledger.start("r", "a" * 64, params)
    ledger.close(failed, "r", "a" * 64, params, "failed")
    assert ledger.spent("r") == (5.0, pytest.approx(1e-7))
    ledger.check_budget("r", params, budget)  # 10 of 12
    ledger.start("r", "a" * 64, params)
    with pytest.raises(BudgetExceeded):
        ledger.check_budget("r", params, budget)
    with ledger.engine.begin() as conn, pytest.raises(sa.exc.DatabaseError):
        conn.execute(sa.text("DELETE FROM privacy_budget_ledger"))  # append-only
    ledger.dispose()


def test_pacsynth_panic_becomes_a_value_free_error(monkeypatch):
    import pacsynth

    class Panic(BaseException):
        pass

    class Exploding:
        def __init__(self, *args):
            pass

        def fit(self, dataset):
            raise Panic("row 3: Jane Doe")

    monkeypatch.setattr(pacsynth, "DpAggregateSeededSynthesizer", Exploding)
    strings = fit_mod.as_strings(harmonized_frame(50), CODEBOOK)
    params = DpParams(epsilon=1.0, delta=1e-7, reporting_length=2)
    with pytest.raises(fit_mod.FitError) as caught:
        fit_mod.fit(fit_mod.dataset(strings), "x", params, CODEBOOK, 1, False)
    assert str(caught.value) == "pac-synth failed (Panic)"


# --- the public folder ---------------------------------------------------------------------------


def test_public_folder_holds_only_public_files_in_codebook_format(handed_off):
    result = synthesize(handed_off)
    public = Path(result["publish"]["public_dir"])
    assert public == handed_off["out"].resolve() / "public" / RELEASE
    assert sorted(p.name for p in public.iterdir()) == sorted(
        [
            "synthetic.csv",
            "aggregates.csv",
            "ctdc_codebook_v3.yaml",
            "metadata.json",
            "comparability.json",
            "comparability.html",
            "explorer.html",
        ]
    )
    synthetic = pd.read_csv(public / "synthetic.csv", dtype=str, keep_default_na=False)
    assert list(synthetic.columns) == CODEBOOK.columns
    for name in CODEBOOK.binary_columns:
        assert set(synthetic[name]) <= {"1", ""}
    typed = synthetic.replace("", pd.NA).astype("string")
    typed["yearOfRegistration"] = typed["yearOfRegistration"].astype("Int64")
    # one record per DP count of each year; records made only of attributes left over (no
    # year-record could take them without an unreleased combination) have no year
    dp_years = {
        k: v for k, v in result_aggregates(result).items() if k.startswith("yearOfRegistration:")
    }
    dated = typed[typed["yearOfRegistration"].notna()]
    assert len(dated) == sum(v for k, v in dp_years.items() if ";" not in k) > 0
    harmonized_schema_for(CODEBOOK, 2025).validate(dated)
    # Nothing sensitive: no sensitive count, and not the canary's rare citizenship anywhere.
    text = "\n".join(p.read_text("utf-8") for p in public.iterdir())
    assert CANARY_CITIZENSHIP not in text
    assert "vs_sensitive" not in text and "sensitive" not in json.loads(
        (public / "comparability.json").read_text("utf-8")
    )
    meta = json.loads((public / "metadata.json").read_text("utf-8"))
    for key in ("title", "coverage", "contributing_partners", "method", "date_submitted"):
        assert meta[key]
    assert meta["method"]["epsilon"] == 12.0 and meta["method"]["delta"] == 3.9e-7
    assert meta["method"]["aggregation_engine"] == "own"  # the default engine, named
    cases = meta["number_of_cases"]
    assert cases["synthetic_records"] == len(typed)
    assert cases["synthetic_records_without_year"] == len(typed) - len(dated)
    aggregates = pd.read_csv(public / "aggregates.csv", keep_default_na=False)
    assert aggregates.loc[0, "length"] == 0
    assert aggregates["length"].max() == 2
    restricted = handed_off["out"].resolve() / "restricted" / RELEASE
    assert {"risk_report.json", "comparability.json", "comparability.html"} <= {
        p.name for p in restricted.iterdir()
    }


def result_aggregates(result: dict) -> dict[str, int]:
    folder = Path(result["fit_aggregates"]["aggregates_dir"])
    return fit_mod.load(folder, result["fit_aggregates"]["aggregates_sha256"]).counts


# --- units ---------------------------------------------------------------------------------------


def test_sampler_reproduces_the_dp_one_counts_and_only_released_values():
    counts = {
        "yearOfRegistration:2020": 60,
        "yearOfRegistration:2021": 40,
        "gender:Woman": 70,
        "gender:Man": 20,
        "gender:Woman;yearOfRegistration:2020": 50,
        "gender:Man;yearOfRegistration:2020": 5,
        "gender:Woman;yearOfRegistration:2021": 20,
        "gender:Man;yearOfRegistration:2021": 15,
        "ageBroad:18-20": 30,
        "ageBroad:18-20;gender:Woman": 30,  # never with a man, never with a year: not formed
    }
    params = DpParams(epsilon=1.0, delta=1e-7, reporting_length=2)
    order = {c: i for i, c in enumerate(CODEBOOK.columns)}
    counts = {fit_mod.canonical_key(k, order): v for k, v in counts.items()}
    aggregates = fit_mod.DpAggregates(counts, 100, params, "x")
    columns = ["yearOfRegistration", "gender", "ageBroad"]
    start = frozenset({"yearOfRegistration"})
    frame = sample(aggregates, columns, seed=1, start_with=start)
    # every released value exactly as often as its noisy count, nothing else
    for column in columns:
        got = frame[column][frame[column] != ""].value_counts().to_dict()
        want = {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith(column + ":")}
        want = {k: v for k, v in want.items() if ";" not in k}
        assert got == want
    pairs = frame.groupby(["yearOfRegistration", "gender"]).size().to_dict()
    dp_pairs = {
        ("2020", "Woman"): 50,
        ("2020", "Man"): 5,
        ("2021", "Woman"): 20,
        ("2021", "Man"): 15,
    }
    assert all(abs(pairs.get(k, 0) - v) <= 2 for k, v in dp_pairs.items())
    # an age is released with a woman only, never with a year: it sits on records of its own
    aged = frame[frame["ageBroad"] != ""]
    assert (aged["gender"] != "Man").all() and (aged["yearOfRegistration"] == "").all()
    again = sample(aggregates, columns, seed=1, start_with=start)
    pd.testing.assert_frame_equal(frame, again)


def test_sampler_makes_one_record_per_protected_record_and_can_place_leftovers_in_them():
    """Issue 19's record count: the 15 protected records beyond the 60 dated ones start
    without a year; with leftovers_exceed_pair_counts the women left over once the noisy pair
    count (2020, Woman) is used up go to dated records past it (a released pair) rather than
    to records of their own."""
    params = DpParams(epsilon=1.0, delta=1e-7, reporting_length=2)
    order = {c: i for i, c in enumerate(CODEBOOK.columns)}
    counts = {
        "yearOfRegistration:2020": 60,
        "gender:Woman": 70,
        "gender:Woman;yearOfRegistration:2020": 50,
    }
    counts = {fit_mod.canonical_key(k, order): v for k, v in counts.items()}
    aggregates = fit_mod.DpAggregates(counts, 75, params, "x")
    columns = ["yearOfRegistration", "gender", "ageBroad"]
    start = frozenset({"yearOfRegistration"})

    def dated_women(frame: pd.DataFrame) -> int:
        return int(((frame["yearOfRegistration"] == "2020") & (frame["gender"] == "Woman")).sum())

    default = sample(aggregates, columns, seed=3, start_with=start)
    assert (default["yearOfRegistration"] == "2020").sum() == 60
    assert (default["gender"] == "Woman").sum() == 70  # every noisy 1-count accounted for
    assert len(default) > 75 and dated_women(default) < 60  # left-overs on their own records
    placed = sample(
        aggregates,
        columns,
        seed=3,
        start_with=start,
        settings=SamplerSettings(leftovers_exceed_pair_counts=True),
    )
    assert len(placed) == 75  # the protected number of records, not one more
    assert (placed["gender"] == "Woman").sum() == 70
    assert dated_women(placed) == 55  # 15 undated women, the other 55 dated, past the 50
    before = SamplerSettings(one_record_per_protected_record=False)
    old = sample(aggregates, columns, seed=3, start_with=start, settings=before)
    assert (old["yearOfRegistration"] == "").sum() == len(old) - 60  # only left-over records


def test_sampler_copes_with_no_released_combination():
    params = DpParams(epsilon=1.0, delta=1e-7, reporting_length=3)
    empty = fit_mod.DpAggregates({}, 0, params, "x")
    frame = sample(empty, CODEBOOK.columns, seed=1, start_with=frozenset({"yearOfRegistration"}))
    assert list(frame.columns) == CODEBOOK.columns and len(frame) == 0


def test_combination_counts_equal_pacsynths_own_count():
    import pacsynth

    strings = fit_mod.as_strings(harmonized_frame(300), CODEBOOK)
    mine = combination_counts(strings, 3, CODEBOOK)
    dataset = pacsynth.Dataset([list(strings.columns), *strings.to_numpy().tolist()])
    order = {c: i for i, c in enumerate(CODEBOOK.columns)}
    theirs = {fit_mod.canonical_key(k, order): v for k, v in dataset.get_aggregates(3, ";").items()}
    assert mine.to_dict() == theirs


def test_compare_counts_fabricated_and_suppressed():
    reference = pd.Series({"a:1": 10, "a:1;b:1": 4, "b:1": 100})
    synthetic = pd.Series({"a:1": 12, "b:1": 90, "a:2;b:1": 3})
    out = compare(reference, synthetic, [10, 100])
    assert out["1"]["mean_absolute_error"] == pytest.approx(6.0)
    assert out["1"]["mean_relative_error"] == pytest.approx((0.2 + 0.1) / 2)
    assert out["2"]["only_in_synthetic"] == 1 and out["2"]["only_in_reference"] == 1
    assert set(out["1"]["by_bucket"]) == {"10-99", "100+"}


def test_shares_use_the_codebook_denominator_rule():
    frame = pd.DataFrame("", index=range(5), columns=CODEBOOK.columns)
    frame.loc[[0, 4], "isForcedLabour"] = "1"
    frame.loc[[1, 4], "isSexualExploit"] = "1"
    frame.loc[2, "isOtherExploit"] = "1"  # record 3 has no information: not in the denominator
    result = shares(frame, CODEBOOK)
    assert result["isForcedLabour"] == {"1": 50.0, "denominator": 4}
    assert result["isOtherExploit"] == {"1": 25.0, "denominator": 4}


def test_suppression_and_risk_are_counted():
    frame = harmonized_frame()
    config = load_suppression_config()
    # a rare value stays in the fit's input: the rule is decided on the DP aggregates
    done = suppress(frame, config, CODEBOOK)
    assert done.frame.loc[0, "citizenship"] == CANARY_CITIZENSHIP
    assert done.report["cells_set_to_null"] == 0
    listed = config.model_copy(update={"never_publish": {"citizenship": [CANARY_CITIZENSHIP]}})
    done = suppress(frame, listed, CODEBOOK)
    assert done.frame.loc[0, "citizenship"] is pd.NA
    assert done.report["variables"]["citizenship"] == {"never_publish_cells": 1}
    assert done.report["cells_set_to_null"] == 1
    risk = disclosure_risk(frame, load_synthesis_config().risk, config)
    assert risk["records"] == 400
    sizes = frame[risk["quasi_identifiers"]].astype("string").fillna("-").value_counts()
    assert risk["records_in_classes_below_k"] == int(sizes[sizes < 10].sum())
    assert risk["rare_values"]["citizenship"]["values"] == {CANARY_CITIZENSHIP: 1}


def test_rare_released_values_are_dropped_after_the_fit_with_their_combinations():
    from ctdc_harmonizer.synthesis.suppress import drop_rare_released, null_rare_values

    params = DpParams(epsilon=12.0, delta=3.9e-7, reporting_length=2)
    counts = {
        "gender:Woman": 50,
        "citizenship:UKR": 40,
        "citizenship:SRB": 9,  # below the threshold of 10: dropped
        "ageBroad:18–20": 8,  # below it too, but ageBroad is not a listed variable
        "gender:Woman;citizenship:UKR": 30,
        "gender:Woman;citizenship:SRB": 9,  # holds the rare value: dropped
        "citizenship:SRB;ageBroad:18–20": 8,
    }
    aggregates = fit_mod.DpAggregates(counts, 100, params, "x", "own")
    done = drop_rare_released(aggregates, load_suppression_config(), CODEBOOK)
    assert done.values == {"citizenship:SRB"}
    assert set(done.aggregates.counts) == {
        "gender:Woman",
        "citizenship:UKR",
        "ageBroad:18–20",
        "gender:Woman;citizenship:UKR",
    }
    assert done.report["combinations_dropped"] == 3
    assert done.report["released_values_below_threshold"] == {
        "CountryOfExploitation": 0,
        "citizenship": 1,
    }
    sample = pd.DataFrame({"citizenship": ["SRB", "UKR", ""], "gender": ["Woman"] * 3})
    assert null_rare_values(sample, done.values)["citizenship"].tolist() == ["", "UKR", ""]


def test_config_overrides_are_validated():
    config = load_synthesis_config()
    assert (config.dp.epsilon, config.dp.delta) == (12.0, 3.9e-7)
    assert config.with_overrides(epsilon=3.0).dp.epsilon == 3.0
    with pytest.raises(CtdcError, match="epsilon"):
        config.with_overrides(epsilon=-1.0)


def test_cli_synthesize_reports_a_clear_error(tmp_path, capsys):
    from ctdc_harmonizer.cli import main

    assert main(["synthesize", "--release", RELEASE, "--out", str(tmp_path)]) == 1
    assert "ctdc: error:" in capsys.readouterr().err
