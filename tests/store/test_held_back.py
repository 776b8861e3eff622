"""Held-back records are harmonized again only when the release year may release them
(issue 16, item 8): a record rejected only because its year of registration lies after the
release year waits for that year; one rejected for any other reason is not redone while its
mapping and the codebook stay the same. Each release still equals a fresh build."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from ctdc_harmonizer import samples
from ctdc_harmonizer.columns import UNKNOWN_RELEASE_YEAR
from ctdc_harmonizer.pipeline.local import run_annual_update
from ctdc_harmonizer.run.plan import _may_release_held_back
from ctdc_harmonizer.store.records import held_back_release_years, may_be_released
from ctdc_harmonizer.warehouse.connection import warehouse
from support.corpus import copy_mappings
from support.store_scenario import release_rows

PARTNER = "hotline"
# Registration years given to three reports: two after the first release year, one before
# the hotline's contribution starts (year_out_of_range too, but no release year lets it in).
AHEAD, LATER, TOO_EARLY = 2025, 2026, 2010


def _set_years(path: Path, years: list[int]) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, year in enumerate(years):
        report = json.loads(lines[i])
        report["report_date"] = f"{year}{report['report_date'][4:]}"
        lines[i] = json.dumps(report)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _increment(source: Path, target: Path, n: int) -> None:
    lines = source.read_text(encoding="utf-8").splitlines()[-n:]
    out = []
    for i, line in enumerate(lines):
        report = json.loads(line)
        report["report_id"] = f"INC-{i:04d}"
        report["report_date"] = f"2020{report['report_date'][4:]}"
        out.append(json.dumps(report))
    target.write_text("\n".join(out) + "\n", encoding="utf-8")


def _run(landing: Path, out: Path, release: str, mappings: Path):
    return run_annual_update(str(landing), str(out), release, mappings=str(mappings))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("held")
    mappings = copy_mappings(root / "mappings", [PARTNER])
    first = root / "landing-2024"
    files = samples.generate(PARTNER, first, 40, 5)
    for path in first.glob("*/withdrawals.csv"):
        path.unlink()
    reports = next(p for p in files if p.suffix == ".jsonl")
    _set_years(reports, [AHEAD, LATER, TOO_EARLY])
    second = root / "landing-2025"
    shutil.copytree(first, second)
    _increment(reports, second / PARTNER / "hotline_reports_increment.jsonl", 5)
    out = root / "out"
    runs = {
        "2024": _run(first, out, "2024", mappings),
        "2025": _run(second, out, "2025", mappings),  # the hotline delivers an increment
        "2026": _run(second, out, "2026", mappings),  # nothing delivered
    }
    return root, mappings, {"2024": first, "2025": second, "2026": second}, out, runs


def test_the_store_keeps_from_which_year_a_held_back_record_may_be_released(built):
    root, mappings, landings, out, runs = built
    url = f"sqlite:///{out / 'warehouse.sqlite'}"
    with warehouse(url, "reading the store") as db:
        # the store keeps the latest two snapshots of a partner: those of 2025 and 2026
        after_2025 = held_back_release_years(db, PARTNER, 2)
        after_2026 = held_back_release_years(db, PARTNER, 3)
    assert after_2025 == [LATER]
    assert after_2026 == []  # both released by now; the one too early never is


def test_held_back_records_are_redone_only_when_their_year_comes(built):
    root, mappings, landings, out, runs = built
    plans = {release: run.plan.partner_plans[PARTNER] for release, run in runs.items()}
    # 2025: the year moved and lets in the report registered in 2025 (not the 2026 one)
    assert plans["2025"].held_back and plans["2026"].held_back
    recon = {
        r: json.loads((out / r / "reconciliation.json").read_text(encoding="utf-8")) for r in runs
    }
    held = {r: recon[r]["partners"][PARTNER]["records"]["held_back"] for r in runs}
    assert held["2024"] - held["2025"] == 1 and held["2025"] - held["2026"] == 1


def test_no_rerun_when_the_year_releases_nothing(built, tmp_path):
    """The 2027 release, nothing delivered, has nothing to do: the hotline's remaining
    held-back records cannot be released by any year (before, they were harmonized again,
    and held back again, every time the year moved)."""
    root, mappings, landings, out, runs = built
    again = _run(landings["2026"], out, "2027", mappings)
    assert not again.plan.partners  # the year moved, but no held-back record can come in


def test_each_release_equals_a_fresh_build(built, tmp_path):
    root, mappings, landings, out, runs = built
    for release, landing in landings.items():
        fresh = tmp_path / f"fresh-{release}"
        _run(landing, fresh, release, mappings)
        assert release_rows(out / release) == release_rows(fresh / release), release


def test_which_held_back_records_may_be_released():
    years = pd.Series([pd.NA, UNKNOWN_RELEASE_YEAR, 2024, 2026], dtype="Int64")
    assert may_be_released(years, 2025, year_moved=False).tolist() == [False, False, True, False]
    assert may_be_released(years, 2025, year_moved=True).tolist() == [False, True, True, False]
    assert may_be_released(years, 2026, year_moved=False).tolist() == [False, False, True, True]
    assert not _may_release_held_back([], 2030, True)
    assert _may_release_held_back([UNKNOWN_RELEASE_YEAR], 2030, True)
    assert not _may_release_held_back([UNKNOWN_RELEASE_YEAR], 2030, False)
    assert not _may_release_held_back([2031], 2030, True)


def _strip_release_years(warehouse_file: Path) -> None:
    """The partner snapshots as a store from before `_releasable_from` was kept wrote them."""
    import hashlib
    import io
    import sqlite3

    import pyarrow.parquet as pq

    from ctdc_harmonizer.columns import RELEASABLE_FROM

    with sqlite3.connect(warehouse_file) as conn:
        for entity, sequence, data in conn.execute(
            "SELECT entity_id, sequence, parquet FROM partner_snapshot"
        ).fetchall():
            table = pq.read_table(io.BytesIO(data))
            table = table.drop_columns([RELEASABLE_FROM])
            sink = io.BytesIO()
            pq.write_table(table, sink)
            old = sink.getvalue()
            conn.execute(
                "UPDATE partner_snapshot SET parquet = ?, sha256 = ? "
                "WHERE entity_id = ? AND sequence = ?",
                (old, hashlib.sha256(old).hexdigest(), entity, sequence),
            )


def test_a_store_that_did_not_know_the_years_learns_them_once(tmp_path):
    """Snapshots written before the release years were kept: the first run after the year
    moves harmonizes the held-back records again (their years unknown), and, although they are
    all held back again, writes the snapshot again with their years, so the next year's run
    knows."""
    mappings = copy_mappings(tmp_path / "mappings", [PARTNER])
    landing = tmp_path / "landing"
    files = samples.generate(PARTNER, landing, 30, 9)
    for path in landing.glob("*/withdrawals.csv"):
        path.unlink()
    latest = LATER + 1
    _set_years(next(p for p in files if p.suffix == ".jsonl"), [latest, TOO_EARLY])
    out = tmp_path / "out"
    _run(landing, out, "2024", mappings)
    _strip_release_years(out / "warehouse.sqlite")
    url = f"sqlite:///{out / 'warehouse.sqlite'}"
    with warehouse(url, "reading the store") as db:
        assert held_back_release_years(db, PARTNER, 1) == [UNKNOWN_RELEASE_YEAR]
    done = _run(landing, out, "2025", mappings)
    assert done.plan.partner_plans[PARTNER].held_back  # not known: tried as the year moved
    with warehouse(url, "reading the store") as db:
        assert held_back_release_years(db, PARTNER, 2) == [latest]
    # and the next release, whose year moves but lets nothing in, has nothing to do (had the
    # years stayed unknown, the held-back records would be harmonized again)
    assert not _run(landing, out, str(LATER), mappings).plan.partners
