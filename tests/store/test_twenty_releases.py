"""Twenty releases into one store, partners feeding it at their own pace (support.long_scenario),
on SQLite and on PostgreSQL (the deployment's warehouse): every release is what a fresh build of
its landing folder gives, the ledgers chain from each release to the next, and the store, its
view and the release folders agree throughout."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from ctdc_harmonizer.pipeline.local import run_annual_update
from ctdc_harmonizer.privacy.keys import pseudonym_key
from ctdc_harmonizer.privacy.pseudonyms import BY_RECORD_ID, pseudonymize
from support.databases import BACKENDS, warehouse_url
from support.long_scenario import LongScenario, build_long
from support.store_scenario import release_rows

pytestmark = pytest.mark.long


def _run(scenario: LongScenario, landing: Path, out: Path, year: str, url: str | None = None):
    return run_annual_update(
        str(landing), str(out), year, mappings=str(scenario.mappings(year)), warehouse_url=url
    )


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> LongScenario:
    return build_long(tmp_path_factory.mktemp("twenty") / "scenario")


@pytest.fixture(scope="module")
def fresh(scenario, tmp_path_factory) -> dict[str, Counter]:
    """Each release built fresh from its year's landing folder alone (a new SQLite store)."""
    root = tmp_path_factory.mktemp("twenty-fresh")
    built = {}
    for year in scenario.releases:
        _run(scenario, scenario.landing(year), root / year, year)
        built[year] = release_rows(root / year / year)
    return built


@pytest.fixture(scope="module", params=BACKENDS)
def store_url(request, tmp_path_factory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("twenty-store")
    with warehouse_url(request.param, folder, "ctdc_twenty") as url:
        yield url


@pytest.fixture(scope="module")
def releases(scenario, store_url, tmp_path_factory) -> tuple[LongScenario, dict]:
    """The scenario run release after release into one store (the command line's path)."""
    out = tmp_path_factory.mktemp("twenty-out")
    runs, made, stored_before = {}, {}, {}
    for year in scenario.years:
        # The survivors withdrawn this year who have a current record in the store.
        stored_before[year] = _current_records_of(store_url, scenario.withdrawn[year])
        runs[year] = _run(scenario, scenario.landing(year), out, year, store_url)
        if (out / year).exists():
            made[year] = release_rows(out / year)  # as made (a later withdrawal purges it)
    return scenario, {
        "out": out,
        "url": store_url,
        "runs": runs,
        "made": made,
        "stored_before": stored_before,
    }


def _pseudonyms(case_ids: list[str]) -> list[str]:
    ids = pd.Series(case_ids, dtype="string")
    return pseudonymize("iom", BY_RECORD_ID, ids, pseudonym_key()).tolist()


def _query(url: str, sql: str, **values) -> list[tuple]:
    """Rows of a query on the store; a list value is bound as an IN list."""
    statement = sa.text(sql).bindparams(
        *(sa.bindparam(k, expanding=True) for k, v in values.items() if isinstance(v, list))
    )
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(statement, values)]
    finally:
        engine.dispose()


def _current_records_of(url: str, case_ids: list[str]) -> int:
    """How many current staged records of IOM's the store holds for these case ids (nobody
    withdraws in the first year, so the store exists when this asks)."""
    if not case_ids:
        return 0
    sql = "SELECT count(*) FROM staged_record WHERE valid_to IS NULL AND pseudonym IN :ps"
    return _query(url, sql, ps=_pseudonyms(case_ids))[0][0]


def _recon(out: Path, year: str) -> dict:
    return json.loads((out / year / "reconciliation.json").read_text(encoding="utf-8"))


def test_the_schedule_gives_every_kind_of_year(scenario):
    """The seeded schedule holds what the tests below are about (a changed seed must too)."""
    states = [s for year in scenario.years[1:] for s in scenario.states[year].items()]
    assert ("iom", "carried") in states and ("iom", "delivered") in states
    assert ("hotline", "carried") in states and ("hotline", "delivered") in states
    assert ("hotline", "discontinued") in states
    assert len(scenario.releases) < len(scenario.years)  # a year in which nobody delivered
    assert [s for s in states if s == ("case_management", "reharmonized")] == [
        ("case_management", "reharmonized")
    ] * 2
    assert sum(len(ids) for ids in scenario.withdrawn.values()) >= 2


def test_each_partner_comes_in_as_scheduled(releases):
    scenario, done = releases
    for year in scenario.years:
        plan = done["runs"][year].plan
        if not scenario.released(year):  # nothing delivered, no mapping changed
            assert plan.nothing_to_do and year not in done["made"], year
            continue
        assert {p: e.state for p, e in plan.partner_plans.items()} == scenario.states[year], year
    assert sorted(done["made"]) == scenario.releases


def test_every_release_equals_a_fresh_build_of_its_landing(releases, fresh):
    scenario, done = releases
    for year in scenario.releases:
        assert done["made"][year] == fresh[year], year


def test_the_ledgers_chain_from_each_release_to_the_next(releases):
    scenario, done = releases
    previous: dict[str, int] = {}
    for year in scenario.releases:
        recon = _recon(done["out"], year)
        assert recon["invariant_holds"], year
        for partner, entry in recon["partners"].items():
            ledger = entry["records"]
            # What the last release left is where this one starts, delivered or not, however
            # many years passed without one.
            assert ledger["previous"] == previous.get(partner, 0), (year, partner)
            retired = sum(ledger["retired"].values())
            assert (
                ledger["previous"] + ledger["added"] - retired - ledger["erased"]
                == ledger["current"]
            ), (year, partner)
            assert (
                ledger["current"] == ledger["released"] + ledger["held_back"] + ledger["merged"]
            ), (year, partner)
            for file in (entry["files"] or {}).values():
                assert file["unaccounted"] == 0, (year, partner)
            previous[partner] = ledger["current"]
        # A partner whose records were only carried lost none and gained none.
        for partner, state in scenario.states[year].items():
            if state in ("carried", "discontinued") and year != scenario.releases[0]:
                ledger = recon["partners"][partner]["records"]
                assert ledger["current"] == ledger["previous"], (year, partner)


def test_each_withdrawal_erases_its_survivor_from_the_store_that_year(releases):
    scenario, done = releases
    withdrawn = [i for year in scenario.years for i in scenario.withdrawn[year]]
    assert sum(done["stored_before"].values()) >= 1  # someone withdrawn had been stored
    for year in scenario.releases[1:]:
        erased = _recon(done["out"], year)["partners"]["iom"]["records"]["erased"]
        # The ledger counts exactly the stored records of the people withdrawn this year
        # (one never stored, e.g. excluded as not a victim, is only erased from the file).
        assert erased == done["stored_before"][year], year
    # Nothing of any of them is left: no record, no version, whatever its validity.
    pseudonyms = _pseudonyms(withdrawn)
    for table in ("staged_record", "case_record"):
        sql = f"SELECT count(*) FROM {table} WHERE pseudonym IN :ps"
        assert _query(done["url"], sql, ps=pseudonyms) == [(0,)], table
    sql = "SELECT count(*) FROM withdrawal_registry WHERE pseudonym IN :ps"
    assert _query(done["url"], sql, ps=pseudonyms) == [(len(set(withdrawn)),)]


def test_the_store_its_view_and_the_folders_agree_after_every_purge(releases):
    scenario, done = releases
    out, url = done["out"], done["url"]
    per_release = dict(
        _query(url, "SELECT release_label, count(*) FROM ctdc_release_v3 GROUP BY 1")
    )
    counts = dict(_query(url, "SELECT label, row_count FROM data_release"))
    snapshots = dict(_query(url, "SELECT entity_id, count(*) FROM partner_snapshot GROUP BY 1"))
    # Twenty years do not pile up snapshots: a partner's latest and the one before it.
    assert len(snapshots) == 4 and max(snapshots.values()) <= 2
    assert sorted(counts) == scenario.releases
    assert per_release == counts
    purged = 0
    for year in scenario.releases:
        now = release_rows(out / year)
        assert sum(now.values()) == counts[year], year
        # A later withdrawal only ever takes rows out of an earlier folder.
        assert not now - done["made"][year], year
        if (out / year / "audit.json").exists():
            purged += 1
            # A rewritten CSV is written as the release wrote it: pandas' rendering of the
            # (rewritten) Parquet, byte for byte.
            table = pd.read_parquet(out / year / "harmonized.parquet")
            written = table.to_csv(index=False, na_rep="").encode("utf-8")
            assert (out / year / "harmonized.csv").read_bytes() == written, year
    assert purged >= 2


def test_a_rerun_of_the_latest_release_changes_nothing(releases):
    scenario, done = releases
    last = scenario.releases[-1]
    before = (done["out"] / last / "harmonized.csv").read_bytes()
    _run(scenario, scenario.landing(last), done["out"], last, done["url"])
    assert (done["out"] / last / "harmonized.csv").read_bytes() == before
