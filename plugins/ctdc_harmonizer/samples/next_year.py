"""A later year: the partners' next deliveries, made from what they delivered before (for the
demo's second year and the tests' multi-year scenarios, which call the same functions once
per year).

- IOM sends its whole dataset again (`full`): a few cases gone, some revised, some new; a
  survivor who withdrew stays in IOM's own system (the registry erases them on reading), and
  IOM may add a survivor to its withdrawals;
- the hotline sends the year's new reports (`incremental`): some earlier reports revised
  (same report id), new ones;
- the NGO (HTCDS) sends nothing; its mapping gets one corrected row (and may get it back).

Invented data only, like every sample.
"""

from __future__ import annotations

import csv
import json
import random
import re
import shutil
from pathlib import Path

# One row of the NGO's mapping, corrected: financial control counted as debt bondage
# (withholding wages) rather than as denial of basic needs.
CORRECTION = (
    "vic_MethodsOfControl,Restricts financial access,meansDenyBasicNeeds,",
    "vic_MethodsOfControl,Restricts financial access,meansDebtBondageEarnings,",
)
IOM_EXTRACT = "iom_case_export_*.csv"
HOTLINE_REPORTS = "hotline_reports_*.jsonl"
WITHDRAWALS = "withdrawals.csv"


def _read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def withdrawn_ids(folder: Path) -> list[str]:
    """The record ids in a partner's withdrawals.csv (none without one), read as CSV: the
    samples quote every value."""
    path = folder / WITHDRAWALS
    return [row["record_id"] for row in _read_csv(path)[1]] if path.exists() else []


def write_withdrawals(folder: Path, ids: list[str]) -> None:
    with (folder / WITHDRAWALS).open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, quoting=csv.QUOTE_ALL)
        writer.writerow(["record_id"])
        writer.writerows([i] for i in ids)


def iom_re_extract(
    last: Path, out: Path, rng: random.Random, year: str = "2026", new: int = 12
) -> list[dict]:
    """IOM's whole dataset again into `out`, replacing the extract there: ~8% of the cases
    gone (never a withdrawn survivor's: IOM keeps them), ~10% revised, `new` new ones (named
    `<case>-<year>`). Returns its rows."""
    (source,) = last.glob(IOM_EXTRACT)
    fields, rows = _read_csv(source)
    withdrawn = set(withdrawn_ids(last))
    kept = [r for r in rows if r["case_id"] in withdrawn or rng.random() > 0.08]
    for row in kept:
        if rng.random() < 0.1:
            row["mimosa_gender"] = "Male" if row["mimosa_gender"] == "Female" else "Female"
    added = [
        dict(r, case_id=f"{r['case_id']}-{year}") for r in rng.sample(kept, min(new, len(kept)))
    ]
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob(IOM_EXTRACT):
        old.unlink()
    with (out / f"iom_case_export_{year}.csv").open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, quoting=csv.QUOTE_ALL)
        writer.writeheader()
        writer.writerows(kept + added)
    return kept + added


def iom_withdrawal(folder: Path, rng: random.Random) -> str:
    """One more survivor of IOM's extract in force withdraws consent; their case id."""
    (source,) = folder.glob(IOM_EXTRACT)
    withdrawn = withdrawn_ids(folder)
    candidates = sorted({r["case_id"] for r in _read_csv(source)[1]} - set(withdrawn))
    chosen = rng.choice(candidates)
    write_withdrawals(folder, [*withdrawn, chosen])
    return chosen


def hotline_increment(
    last: Path, out: Path, rng: random.Random, year: str = "2026", revised: int = 8, new: int = 10
) -> None:
    """The year's reports into `out`, beside the earlier ones: `revised` earlier reports
    (their latest version) with another country of exploitation under the same report id,
    `new` new ones (ids `HL-<yy>-...`, after every sample's)."""
    latest: dict[str, dict] = {}
    for path in sorted(last.glob(HOTLINE_REPORTS)):
        for line in path.read_text(encoding="utf-8").splitlines():
            report = json.loads(line)
            latest[report["report_id"]] = report
    reports = list(latest.values())
    countries = sorted({r["exploitation_country"] for r in reports if r["exploitation_country"]})
    changed = [
        dict(r, exploitation_country=rng.choice(countries)) for r in rng.sample(reports, revised)
    ]
    added = [
        dict(r, report_id=f"HL-{year[-2:]}-{i:07d}") for i, r in enumerate(rng.sample(reports, new))
    ]
    out.mkdir(parents=True, exist_ok=True)
    with (out / f"hotline_reports_{year}.jsonl").open("w", encoding="utf-8") as f:
        for report in changed + added:
            f.write(json.dumps(report) + "\n")


def correct_mapping(mappings: Path, undo: bool = False) -> None:
    """The corrected row in the NGO's values.csv, or (`undo`) the row as it was; the folder
    is edited in place."""
    old, new = CORRECTION[::-1] if undo else CORRECTION
    values = mappings / "case_management" / "values.csv"
    text = values.read_text(encoding="utf-8")
    if old not in text:
        raise ValueError("the row to change is not in case_management/values.csv")
    values.write_text(text.replace(old, new), encoding="utf-8")


def mark_discontinued(mappings: Path, partner: str) -> None:
    """A partner that stopped delivering: `status: discontinued` in its partner.yaml's
    delivery block, under its mode (the folder is edited in place)."""
    path = mappings / partner / "partner.yaml"
    text = path.read_text(encoding="utf-8")
    marked, count = re.subn(r"(?m)^(  mode: \S+\n)", r"\1  status: discontinued\n", text, count=1)
    if not count:
        raise ValueError(f"{partner}/partner.yaml has no delivery mode to mark discontinued")
    path.write_text(marked, encoding="utf-8")


def next_year(landing: Path, seed: int = 16, year: str = "2026") -> dict[str, str]:
    """The landing folder a year later (edited in place): IOM's re-extract and the hotline's
    increment delivered, the NGO silent. Returns what each partner did."""
    rng = random.Random(seed)
    done = {}
    if (landing / "iom").is_dir():
        iom_re_extract(landing / "iom", landing / "iom", rng, year)
        done["iom"] = "a full re-extract (cases revised, gone and new)"
    if (landing / "hotline").is_dir():
        hotline_increment(landing / "hotline", landing / "hotline", rng, year)
        done["hotline"] = "an increment (new reports, some revised)"
    if (landing / "case_management").is_dir():
        done["case_management"] = "no delivery (its mapping corrected)"
    return done


def copy_mappings(source: Path, target: Path) -> Path:
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    return target
