"""Three years of deliveries, as partners make them (issue 16's scenario), and the same three
releases built fresh from each year's effective deliveries.

- year 1: all four partners deliver (the seeded samples, with their withdrawals);
- year 2: the hotline delivers an increment (new reports and revised ones), IOM a full
  re-extract (some cases revised, some gone, some new), the NGO (HTCDS) nothing, and one row of
  the NGO's mapping is corrected;
- year 3: IOM withdraws a survivor registered in year 1, and the hotline is marked
  discontinued (it does not deliver).

`landing` is the data team's landing folder as it is on each year's run (files stay there;
IOM's re-extract replaces its old one); `effective` is, per year, what a fresh build must
read to give the same release: every file still in force, and every withdrawal so far.
"""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ctdc_harmonizer import samples
from ctdc_harmonizer.samples import next_year

REPO_MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"
RECORDS = 60


@dataclass
class Scenario:
    root: Path
    years: list[str] = field(default_factory=lambda: ["2023", "2024", "2025"])

    def landing(self, year: str) -> Path:
        return self.root / "landing" / year

    def effective(self, year: str) -> Path:
        return self.root / "effective" / year

    def mappings(self, year: str) -> Path:
        return self.root / "mappings" / year

    def withdrawn_case(self) -> str:
        return json.loads((self.root / "withdrawn.json").read_text())["iom"]


def release_rows(folder: Path) -> Counter:
    """A release folder's table as a multiset of rows (rows compared whatever their order)."""
    table = pd.read_csv(folder / "harmonized.csv", dtype=str, keep_default_na=False)
    return Counter(map(tuple, table.itertuples(index=False)))


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst, dirs_exist_ok=True)
    else:
        shutil.copy2(src, dst)


def build(root: Path, seed: int = 16) -> Scenario:
    scenario = Scenario(root)
    rng = random.Random(seed)
    y1, y2, y3 = scenario.years
    # Year 1: every partner, as the samples generator writes them.
    samples.generate_all(scenario.landing(y1), RECORDS, seed)
    _copy(REPO_MAPPINGS, scenario.mappings(y1))
    # Year 2: the landing as the team leaves it, with the year's deliveries.
    _copy(scenario.landing(y1), scenario.landing(y2))
    # a full re-extract replaces IOM's old file; the hotline's increment joins its first
    iom_rows = next_year.iom_re_extract(
        scenario.landing(y1) / "iom", scenario.landing(y2) / "iom", rng
    )
    next_year.hotline_increment(
        scenario.landing(y1) / "hotline", scenario.landing(y2) / "hotline", rng
    )
    _copy(scenario.mappings(y1), scenario.mappings(y2))
    next_year.correct_mapping(scenario.mappings(y2))
    # Year 3: IOM withdraws a year-1 survivor still in its dataset; the hotline stops.
    _copy(scenario.landing(y2), scenario.landing(y3))
    year_one = {r["case_id"] for r in iom_rows if not r["case_id"].endswith("-2026")}
    withdrawn = sorted(year_one)[0]
    earlier = next_year.withdrawn_ids(scenario.landing(y1) / "iom")
    next_year.write_withdrawals(scenario.landing(y3) / "iom", [*earlier, withdrawn])
    (root / "withdrawn.json").write_text(json.dumps({"iom": withdrawn}))
    _copy(scenario.mappings(y2), scenario.mappings(y3))
    next_year.mark_discontinued(scenario.mappings(y3), "hotline")
    # What a fresh build must read each year: the files in force (the hotline's year-1 reports
    # beside its increment, IOM's re-extract alone) and every withdrawal so far: the landing
    # folder as the team keeps it is exactly that.
    for year in scenario.years:
        _copy(scenario.landing(year), scenario.effective(year))
    return scenario
