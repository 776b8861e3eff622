"""A year later: the partners' next deliveries, made from the sample extracts they delivered
(for the demo's second year and the tests' multi-year scenarios).

- IOM sends its whole dataset again (`full`): a few cases gone, some revised, some new; a
  survivor who withdrew stays in IOM's own system (the registry erases them on reading);
- the hotline sends the year's new reports (`incremental`): some earlier reports revised
  (same report id), new ones;
- the NGO (HTCDS) sends nothing; its mapping gets one corrected row.

Invented data only, like every sample.
"""

from __future__ import annotations

import csv
import json
import random
import shutil
from pathlib import Path

# One row of the NGO's mapping, corrected: financial control counted as debt bondage
# (withholding wages) rather than as denial of basic needs.
CORRECTION = (
    "vic_MethodsOfControl,Restricts financial access,meansDenyBasicNeeds,",
    "vic_MethodsOfControl,Restricts financial access,meansDebtBondageEarnings,",
)


def iom_re_extract(last: Path, out: Path, rng: random.Random) -> list[dict]:
    """IOM's whole dataset a year later into `out` (replacing the extract in it): ~8% of the
    cases gone, ~10% revised, 12 new. Returns its rows."""
    source = next(last.glob("iom_case_export_*.csv"))
    with source.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    fields = list(rows[0])
    withdrawals = last / "withdrawals.csv"
    withdrawn = (
        set(withdrawals.read_text(encoding="utf-8").split()[1:]) if withdrawals.exists() else set()
    )
    kept = [r for r in rows if r["case_id"] in withdrawn or rng.random() > 0.08]
    for r in kept:
        if rng.random() < 0.1:
            r["mimosa_gender"] = "Male" if r["mimosa_gender"] == "Female" else "Female"
    new = [dict(r, case_id=f"{r['case_id']}-N") for r in rng.sample(kept, min(12, len(kept)))]
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("iom_case_export_*.csv"):
        old.unlink()
    with (out / "iom_case_export_2026.csv").open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, quoting=csv.QUOTE_ALL)
        writer.writeheader()
        writer.writerows(kept + new)
    return kept + new


def hotline_increment(last: Path, out: Path, rng: random.Random) -> None:
    """Next year's reports into `out`: 8 earlier reports revised (same report id), 10 new."""
    source = next(last.glob("hotline_reports_*.jsonl"))
    reports = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines()]
    revised = [dict(r, exploitation_country="Mexico") for r in rng.sample(reports, 8)]
    new = [dict(r, report_id=f"HL-26-{i:07d}") for i, r in enumerate(rng.sample(reports, 10))]
    out.mkdir(parents=True, exist_ok=True)
    with (out / "hotline_reports_2026.jsonl").open("w", encoding="utf-8") as f:
        for report in revised + new:
            f.write(json.dumps(report) + "\n")


def correct_mapping(mappings: Path) -> None:
    """The corrected row in the NGO's values.csv (the folder is edited in place)."""
    values = mappings / "case_management" / "values.csv"
    text = values.read_text(encoding="utf-8")
    if CORRECTION[0] not in text:
        raise ValueError("the row to correct is not in case_management/values.csv")
    values.write_text(text.replace(*CORRECTION), encoding="utf-8")


def next_year(landing: Path, seed: int = 16) -> dict[str, str]:
    """The landing folder a year later (edited in place): IOM's re-extract and the hotline's
    increment delivered, the NGO silent. Returns what each partner did."""
    rng = random.Random(seed)
    done = {}
    if (landing / "iom").is_dir():
        iom_re_extract(landing / "iom", landing / "iom", rng)
        done["iom"] = "a full re-extract (cases revised, gone and new)"
    if (landing / "hotline").is_dir():
        hotline_increment(landing / "hotline", landing / "hotline", rng)
        done["hotline"] = "an increment (new reports, some revised)"
    if (landing / "case_management").is_dir():
        done["case_management"] = "no delivery (its mapping corrected)"
    return done


def copy_mappings(source: Path, target: Path) -> Path:
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    return target
