"""Privacy loss per person across releases (issue 19, item 3): three cumulative releases of
tests/support/store_scenario.py, each synthesized; a fourth over the lifetime cap per person.

Small releases (60 records per partner) and reporting length 2 keep each fit to a second.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from ctdc_harmonizer import samples
from ctdc_harmonizer.codebook import default_codebook
from ctdc_harmonizer.paths import schemas_dir
from ctdc_harmonizer.pipeline import local
from ctdc_harmonizer.pipeline.local import run_annual_update
from ctdc_harmonizer.pipeline.synthesis import PEOPLE_REPORT, SYNTHESIS
from ctdc_harmonizer.synthesis import fit as fit_mod
from ctdc_harmonizer.synthesis import people
from ctdc_harmonizer.synthesis.config import DpParams, PersonBudgetConfig, load_synthesis_config
from ctdc_harmonizer.synthesis.ledger import FAILED, SPENT, Ledger, new_attempt_id
from ctdc_harmonizer.warehouse import default_warehouse_url
from support.databases import BACKENDS, warehouse_url
from support.store_scenario import build

CODEBOOK = default_codebook()
EPSILON = load_synthesis_config().dp.epsilon  # 12, the published one
FOURTH = "2026"


def _config(folder: Path, **replace: str) -> str:
    text = (schemas_dir() / "synthesis_v1.yaml").read_text("utf-8")
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    path = folder / f"synthesis_{len(list(folder.glob('synthesis_*.yaml')))}.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def _synthesize(out: Path, release: str, **kwargs) -> dict:
    kwargs.setdefault("config_path", _config(out.parent))
    done = local.run(SYNTHESIS, release=release, out=str(out), reporting_length=2, **kwargs)
    return {k: v.model_dump() if hasattr(v, "model_dump") else v for k, v in done.items()}


def _rows(url: str, table: str) -> list[tuple]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY id"))]
    engine.dispose()
    return rows


def _persons(url: str, release: str) -> set[str]:
    found = people.release_people(url, release, CODEBOOK)
    assert found is not None
    return set(found.persons)


@pytest.fixture(scope="module")
def releases(tmp_path_factory) -> dict:
    """Three years run into one store, each release synthesized right after it is made."""
    root = tmp_path_factory.mktemp("people")
    scenario = build(root / "scenario")
    out = root / "out"
    url = default_warehouse_url(str(out))
    done, ledger_people = {}, {}
    for year in scenario.years:
        run_annual_update(
            str(scenario.landing(year)), str(out), year, mappings=str(scenario.mappings(year))
        )
        ledger_people[f"before synthesis {year}"] = len(people.cumulative(url))
        done[year] = _synthesize(out, year)
        ledger_people[f"after synthesis {year}"] = len(people.cumulative(url))
    # A fourth release: the year-3 deliveries, and IOM's new full re-extract, larger (most
    # of its records new; the release left without its people over the cap stays fittable).
    y3 = scenario.years[-1]
    landing = root / "landing-4"
    shutil.copytree(scenario.landing(y3), landing)
    extract = samples.generate("iom", root / "iom-4", n=400, seed=99)
    for old in (landing / "iom").glob("iom_case_export_*.csv"):
        old.unlink()
    for path in extract:
        if path.name.startswith("iom_case_export_"):
            shutil.copy2(path, landing / "iom" / path.name)
    fourth = run_annual_update(
        str(landing),
        str(out),
        FOURTH,
        mappings=str(scenario.mappings(y3)),
        accept_retirements=["iom"],  # its old records left its dataset
    )
    return {
        "root": root,
        "out": out,
        "url": url,
        "years": scenario.years,
        "done": done,
        "ledger_people": ledger_people,
        "fourth_approval": fourth.summary.body,
    }


def test_survivors_of_the_first_release_are_at_three_times_epsilon(releases):
    url, (y1, y2, y3) = releases["url"], releases["years"]
    held = {y: _persons(url, y) for y in (y1, y2, y3)}
    totals = people.cumulative(url)["epsilon"]
    in_all = held[y1] & held[y2] & held[y3]
    assert in_all  # the scenario keeps most year-1 survivors
    assert np.allclose(totals[sorted(in_all)].to_numpy(), 3 * EPSILON)
    # every person is at epsilon times the number of fitted releases that held them
    for person, total in totals.items():
        times = sum(person in held[y] for y in (y1, y2, y3))
        assert total == pytest.approx(times * EPSILON)
    assert set(totals.index) == held[y1] | held[y2] | held[y3]
    # the restricted report and the result give the distribution, never a pseudonym
    third = releases["done"][y3]["account_people"]
    assert third["cumulative_epsilon_after_fit"]["max"] == pytest.approx(3 * EPSILON)
    assert third["left_out_people"] == 0
    report = (releases["out"] / "restricted" / y3 / PEOPLE_REPORT).read_text("utf-8")
    assert json.loads(report)["cumulative_epsilon_after_fit"]["p50"] > 0
    for person in list(in_all)[:50]:
        assert person not in report
        assert person not in json.dumps(releases["done"][y3], default=str)


def test_the_approval_request_shows_the_distribution_without_a_pseudonym(releases):
    body = releases["fourth_approval"]
    totals = people.cumulative(releases["url"])["epsilon"]
    shown = people.distribution(totals)
    assert "Privacy loss per person" in body
    assert f"| {shown['people']:,} | 36 | {shown['p50']:g} |" in body
    over = int((totals + EPSILON > 36 + 1e-9).sum())
    assert f"would take {over:,} of them past the cap" in body
    assert not any(person in body for person in totals.index)


def test_a_withdrawn_person_stops_accruing_and_is_forgotten(releases):
    # year 3's commit erased a survivor of years 1 and 2: their rows left the per-person
    # ledger with their records (nobody else left it)
    counted, (_, y2, y3) = releases["ledger_people"], releases["years"]
    assert counted[f"before synthesis {y3}"] == counted[f"after synthesis {y2}"] - 1


def test_a_fit_over_the_cap_is_refused_before_fit(releases, monkeypatch):
    url = releases["url"]
    ledger, persons = _rows(url, "privacy_budget_ledger"), _rows(url, "privacy_person_ledger")

    def must_not_fit(*args, **kwargs):
        raise AssertionError("the fit ran although people were over the cap")

    monkeypatch.setattr(fit_mod, "fit", must_not_fit)  # either engine
    monkeypatch.setattr(fit_mod, "fit_own", must_not_fit)
    with pytest.raises(people.PersonalBudgetExceeded, match="refused before fit") as refused:
        _synthesize(releases["out"], FOURTH)
    assert "past the lifetime cap per person (epsilon 36" in str(refused.value)
    assert _rows(url, "privacy_budget_ledger") == ledger  # no epsilon spent
    assert _rows(url, "privacy_person_ledger") == persons
    assert not (releases["out"] / "public" / FOURTH).exists()


def test_leave_out_fits_without_the_people_over_the_cap_and_counts_them(releases):
    url, out = releases["url"], releases["out"]
    before = people.cumulative(url)["epsilon"]
    held = people.release_people(url, FOURTH, CODEBOOK).persons
    at_cap = held[held.map(before).fillna(0.0) + EPSILON > 36.0 + 1e-9]
    assert 0 < at_cap.nunique() < held.nunique()
    config = _config(releases["root"], **{"over_cap: refuse": "over_cap: leave_out"})
    done = _synthesize(out, FOURTH, config_path=config)
    accounted = done["account_people"]
    assert accounted["left_out_people"] == at_cap.nunique()
    assert accounted["left_out_rows"] == len(at_cap)
    assert done["suppress"]["rows"] == len(held) - len(at_cap)  # the fit's input
    assert accounted["cumulative_epsilon_after_fit"]["max"] <= 36.0
    # the fitted people are exactly the others; the people left out did not accrue
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        fitted = {
            p
            for (p,) in conn.execute(
                sa.text("SELECT person FROM privacy_person_ledger WHERE release_label = :r"),
                {"r": FOURTH},
            )
        }
    engine.dispose()
    assert fitted == set(held) - set(at_cap)
    after = people.cumulative(url)["epsilon"]
    assert np.allclose(after[sorted(set(at_cap))].to_numpy(), 36.0)
    public = pd.read_csv(out / "public" / FOURTH / "synthetic.csv")
    assert len(public) > 0
    # a rerun reuses the aggregates: the same people left out, nothing spent
    again = _synthesize(out, FOURTH, config_path=config)
    assert again["fit_aggregates"]["reused"] is True
    assert again["account_people"]["left_out_people"] == at_cap.nunique()
    assert people.cumulative(url)["epsilon"].equals(after)


def test_a_release_the_store_does_not_hold_is_refused(releases, tmp_path):
    with pytest.raises(people.NotAccountable, match="not in the warehouse's store"):
        _synthesize(releases["out"], FOURTH, warehouse_url=f"sqlite:///{tmp_path}/other.db")


# --- the ledger's rules, on both backends ---------------------------------------------------


@pytest.fixture(params=BACKENDS)
def url(request, tmp_path) -> Iterator[str]:
    with warehouse_url(request.param, tmp_path, "ctdc_people") as found:
        yield found


def test_sums_count_every_attempt_but_failed_ones(url):
    params = DpParams(epsilon=5.0, delta=1e-7, reporting_length=2)
    cap = PersonBudgetConfig(lifetime_epsilon=12.0, lifetime_delta=1e-6)
    ledger = Ledger(url)
    a, b, c = (pd.Series(list(s), dtype="string") for s in ("xy", "xz", "x"))
    first = ledger.start("r1", "d" * 64, params, people_attempt(url, "r1", a, params))
    ledger.close(first, "r1", "d" * 64, params, SPENT, "a" * 64)
    failed = ledger.start("r2", "e" * 64, params, people_attempt(url, "r2", b, params))
    ledger.close(failed, "r2", "e" * 64, params, FAILED)
    people_attempt(url, "r3", c, params)  # a crash before the ledger's start: counted
    ledger.dispose()
    sums = people.cumulative(url)
    assert sums["epsilon"].to_dict() == {"x": 10.0, "y": 5.0}
    assert people.over_cap(people.projected(url, a, params), cap).tolist() == [True, False]
    assert people.distribution(sums["epsilon"])["max"] == 10.0


def people_attempt(url: str, release: str, persons: pd.Series, params: DpParams) -> str:
    attempt = new_attempt_id()
    people.record(url, attempt, release, persons, params)
    return attempt
