"""Twenty releases of one cumulative dataset, fed as partners feed it: each at its own pace,
on a seeded random schedule.

- release 1: every partner delivers (the seeded samples, with their withdrawals);
- then, each year:
  - IOM (`full`) sends its whole dataset again in about half of the years (a few cases gone,
    some revised, a few new), and withdraws a survivor in about one year in five, with or
    without a delivery;
  - the hotline (`incremental`) sends an increment in about half of the years (earlier
    reports revised under their report id, new ones), until the year it is marked
    discontinued; from then on its records are carried;
  - the NGO (HTCDS, `full`) never delivers again; one row of its mapping is corrected in one
    year and put back in a later one (its stored records are harmonized again both times);
  - the legacy partner is discontinued from the start.

`landing(year)` is the landing folder as the data team keeps it on that year's run: the files
in force (IOM's latest extract alone, the hotline's first delivery and every increment) and
every withdrawal so far. A release built fresh from it must equal the store's release.
"""

from __future__ import annotations

import csv
import json
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ctdc_harmonizer import samples
from ctdc_harmonizer.samples.next_year import CORRECTION

REPO_MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"
RECORDS = 40
# After the generator's own file names (hotline_reports_2025.jsonl), so that a later
# increment's file also sorts after the first delivery.
FIRST_YEAR = 2030
RELEASES = 20

DELIVERED = "delivered"
CARRIED = "carried"
REHARMONIZED = "reharmonized"
DISCONTINUED = "discontinued"


@dataclass
class LongScenario:
    root: Path
    years: list[str]
    # year -> partner -> the partner's state the plan must give it that year
    states: dict[str, dict[str, str]] = field(default_factory=dict)
    # year -> the IOM case ids withdrawn that year
    withdrawn: dict[str, list[str]] = field(default_factory=dict)

    def landing(self, year: str) -> Path:
        return self.root / "landing" / year

    def released(self, year: str) -> bool:
        """Whether the year's run makes a release: a year in which no partner delivered and no
        mapping changed has nothing to do (README, "nothing to do")."""
        return any(s in (DELIVERED, REHARMONIZED) for s in self.states[year].values())

    @property
    def releases(self) -> list[str]:
        return [year for year in self.years if self.released(year)]

    def mappings(self, year: str) -> Path:
        return self.root / "mappings" / year


def _read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _withdrawn_ids(folder: Path) -> list[str]:
    path = folder / "withdrawals.csv"
    return [row["record_id"] for row in _read_csv(path)[1]] if path.exists() else []


def _write_withdrawals(folder: Path, ids: list[str]) -> None:
    with (folder / "withdrawals.csv").open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, quoting=csv.QUOTE_ALL)
        writer.writerow(["record_id"])
        writer.writerows([i] for i in ids)


def _iom_re_extract(folder: Path, year: str, rng: random.Random) -> None:
    """IOM's whole dataset again: ~8% of the cases gone (a withdrawn survivor stays in IOM's
    own system), ~10% revised, 5 new; the new extract replaces the one in force."""
    (source,) = folder.glob("iom_case_export_*.csv")
    fields, rows = _read_csv(source)
    withdrawn = set(_withdrawn_ids(folder))
    kept = [r for r in rows if r["case_id"] in withdrawn or rng.random() > 0.08]
    for row in kept:
        if rng.random() < 0.1:
            row["mimosa_gender"] = "Male" if row["mimosa_gender"] == "Female" else "Female"
    new = [dict(r, case_id=f"{r['case_id']}-{year}") for r in rng.sample(kept, 5)]
    source.unlink()
    with (folder / f"iom_case_export_{year}.csv").open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, quoting=csv.QUOTE_ALL)
        writer.writeheader()
        writer.writerows(kept + new)


def _iom_withdrawal(folder: Path, rng: random.Random) -> str:
    """One more survivor of IOM's current extract withdraws consent."""
    (source,) = folder.glob("iom_case_export_*.csv")
    withdrawn = _withdrawn_ids(folder)
    candidates = sorted({r["case_id"] for r in _read_csv(source)[1]} - set(withdrawn))
    chosen = rng.choice(candidates)
    _write_withdrawals(folder, [*withdrawn, chosen])
    return chosen


def _hotline_increment(folder: Path, year: str, rng: random.Random) -> None:
    """The year's reports: 4 earlier ones revised under their report id, 5 new."""
    latest: dict[str, dict] = {}
    for path in sorted(folder.glob("hotline_reports_*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            report = json.loads(line)
            latest[report["report_id"]] = report
    reports = list(latest.values())
    countries = sorted({r["exploitation_country"] for r in reports if r["exploitation_country"]})
    revised = [dict(r, exploitation_country=rng.choice(countries)) for r in rng.sample(reports, 4)]
    new = [dict(r, report_id=f"HL-{year}-{i:04d}") for i, r in enumerate(rng.sample(reports, 5))]
    with (folder / f"hotline_reports_{year}.jsonl").open("w", encoding="utf-8") as f:
        for report in revised + new:
            f.write(json.dumps(report) + "\n")


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    if old not in text:
        raise ValueError(f"{path.name}: the text to replace is not there")
    path.write_text(text.replace(old, new), encoding="utf-8")


def build_long(root: Path, seed: int = 17, records: int = RECORDS) -> LongScenario:
    """The scenario under `root`; `records` per partner in the first year (the yearly changes
    are the same few rows whatever the size: benchmarks/bench_years.py runs it larger)."""
    rng = random.Random(seed)
    years = [str(FIRST_YEAR + k) for k in range(RELEASES)]
    scenario = LongScenario(root, years)
    corrected, restored = rng.randint(3, 8), rng.randint(10, 15)
    hotline_stops = rng.randint(13, 17)

    first = years[0]
    samples.generate_all(scenario.landing(first), records, seed)
    shutil.copytree(REPO_MAPPINGS, scenario.mappings(first))
    scenario.states[first] = {
        "case_management": DELIVERED,
        "ctdc_legacy": DELIVERED,
        "hotline": DELIVERED,
        "iom": DELIVERED,
    }
    scenario.withdrawn[first] = []
    for k, year in enumerate(years[1:], start=1):
        before = years[k - 1]
        shutil.copytree(scenario.landing(before), scenario.landing(year))
        shutil.copytree(scenario.mappings(before), scenario.mappings(year))
        landing, mappings = scenario.landing(year), scenario.mappings(year)
        states = {"ctdc_legacy": DISCONTINUED}

        iom_delivers = rng.random() < 0.5
        if iom_delivers:
            _iom_re_extract(landing / "iom", year, rng)
        scenario.withdrawn[year] = []
        if rng.random() < 0.2:
            scenario.withdrawn[year].append(_iom_withdrawal(landing / "iom", rng))
        # A withdrawal list is a delivery of its own.
        states["iom"] = DELIVERED if iom_delivers or scenario.withdrawn[year] else CARRIED

        if k >= hotline_stops:
            if k == hotline_stops:
                _edit(
                    mappings / "hotline" / "partner.yaml",
                    "  mode: incremental\n",
                    "  mode: incremental\n  status: discontinued\n",
                )
            states["hotline"] = DISCONTINUED
        elif rng.random() < 0.5:
            _hotline_increment(landing / "hotline", year, rng)
            states["hotline"] = DELIVERED
        else:
            states["hotline"] = CARRIED

        values = mappings / "case_management" / "values.csv"
        if k == corrected:
            _edit(values, *CORRECTION)
        elif k == restored:
            _edit(values, CORRECTION[1], CORRECTION[0])
        states["case_management"] = REHARMONIZED if k in (corrected, restored) else CARRIED
        scenario.states[year] = states
    return scenario
