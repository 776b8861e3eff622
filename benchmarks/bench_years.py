"""Benchmark: twenty yearly releases into one store, each `ctdc run` a fresh process, as a
data team runs them. Does a release cost more as the store accumulates the years?

    python benchmarks/bench_years.py --records-per-partner 10000

Builds tests/support/long_scenario.py's schedule (IOM's re-extracts and withdrawals, the
hotline's increments until it stops, the NGO's mapping corrected and put back, years in which
nobody delivers) with N records per partner in the first year, then runs every year into one
SQLite store and prints, per year, what each partner did, the wall time, the CPU of the whole
process tree (bench_cli.adopt_orphans), the rows read, the records released (every
partner's current records, carried ones included) and the store's size. Counts,
sizes and times only; the runs' output goes to log files in the work folder.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
from pathlib import Path
from statistics import median

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from bench_cli import adopt_orphans, ctdc_run_command, measure  # noqa: E402

from support.long_scenario import build_long  # noqa: E402

SHORT = {"delivered": "D", "carried": ".", "reharmonized": "R", "discontinued": "-"}


def _summary(rows: list[dict]) -> str:
    """The first release's wall time, the later releases' and the idle years' medians (a
    short run, `--years`, may have no later release or no idle year)."""
    made = [r["wall_s"] for r in rows if r["released"]]
    idle = [r["wall_s"] for r in rows if not r["released"]]
    parts = [f"first release {made[0]:.2f} s" if made else "no release"]
    if len(made) > 1:
        later = made[1:]
        parts.append(
            f"later releases median {median(later):.2f} s (first of them {later[0]:.2f} s, "
            f"last {later[-1]:.2f} s)"
        )
    if idle:
        parts.append(f"years with nothing to do median {median(idle):.2f} s")
    return "; ".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records-per-partner", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument(
        "--years", type=int, default=None, help="run only the schedule's first N years"
    )
    parser.add_argument(
        "--work", type=Path, default=None, help="an empty folder to work in (default: a new one)"
    )
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="ctdc-years-"))
    logs = work / "logs"
    logs.mkdir(parents=True)
    scenario = build_long(work / "scenario", seed=args.seed, records=args.records_per_partner)
    out = work / "out"
    env = dict(os.environ)
    # PRIVACY: a run needs the pseudonym key; a benchmark makes a throwaway one.
    env.setdefault("CTDC_PSEUDONYM_KEY", secrets.token_hex(32))
    adopting = adopt_orphans()
    sampling = {"interval": 0.05, "use_psutil": False}
    partners = sorted(scenario.states[scenario.years[0]])
    print(f"bench years: {args.records_per_partner:,} records per partner in the first year")
    legend = "D delivered, . carried, R re-harmonized, - discontinued"
    print(f"partners ({legend}): {', '.join(partners)}")
    print(
        f"{'year':<6} {'partners':<9} {'rows read':>9} {'wall s':>7} {'CPU s':>7} "
        f"{'released':>9} {'store MiB':>10}"
    )
    rows = []
    for year in scenario.years[: args.years]:
        command = ctdc_run_command(
            scenario.landing(year), out, year, mappings=scenario.mappings(year)
        )
        measured = measure(command, env, logs, year, sampling, adopting)
        if measured.returncode != 0:
            print(f"bench years: {year} failed (exit code {measured.returncode}); see {logs}")
            return 1
        states = "".join(SHORT[scenario.states[year][p]] for p in partners)
        released = scenario.released(year)
        recon = json.loads((out / year / "reconciliation.json").read_text()) if released else None
        read = recon["totals"]["rows_read"] if recon else 0
        count = recon["records"]["released"] if recon else None
        store = (out / "warehouse.sqlite").stat().st_size / 2**20
        cpu = measured.tree_cpu_s if measured.tree_cpu_s is not None else measured.cpu_s
        rows.append({"released": released, "wall_s": measured.wall_s})
        shown = f"{count:,}" if count is not None else "none"
        print(
            f"{year:<6} {states:<9} {read:>9,} {measured.wall_s:7.2f} {cpu:7.2f} {shown:>9} "
            f"{store:10.1f}"
        )
    print(_summary(rows))
    print(f"bench years: work folder {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
