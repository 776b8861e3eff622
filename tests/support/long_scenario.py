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

import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ctdc_harmonizer import samples
from ctdc_harmonizer.samples import next_year

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
            next_year.iom_re_extract(landing / "iom", landing / "iom", rng, year, new=5)
        scenario.withdrawn[year] = []
        if rng.random() < 0.2:
            scenario.withdrawn[year].append(next_year.iom_withdrawal(landing / "iom", rng))
        # A withdrawal list is a delivery of its own.
        states["iom"] = DELIVERED if iom_delivers or scenario.withdrawn[year] else CARRIED

        if k >= hotline_stops:
            if k == hotline_stops:
                next_year.mark_discontinued(mappings, "hotline")
            states["hotline"] = DISCONTINUED
        elif rng.random() < 0.5:
            next_year.hotline_increment(
                landing / "hotline", landing / "hotline", rng, year, revised=4, new=5
            )
            states["hotline"] = DELIVERED
        else:
            states["hotline"] = CARRIED

        if k in (corrected, restored):
            next_year.correct_mapping(mappings, undo=k == restored)
        states["case_management"] = REHARMONIZED if k in (corrected, restored) else CARRIED
        scenario.states[year] = states
    return scenario
