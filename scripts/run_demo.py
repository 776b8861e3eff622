"""Run the ctdc_annual_update DAG end to end in this process (what `make demo` does): two
consecutive years.

Sets up a local Airflow (AIRFLOW_HOME from the environment, else <repo>/demo/airflow; SQLite;
no example DAGs; the repository's dags/ folder), migrates its metadata database when
needed, then runs the DAG with `dag.test()` twice:

1. the year before `--release`: every partner delivers its sample extract;
2. `--release`: IOM sends its whole dataset again, the hotline an increment, the NGO (HTCDS)
   nothing, and one row of the NGO's mapping is corrected (a copy of mappings/ in the demo
   folder): the store carries the NGO forward and harmonizes its history again.

After each run it prints the release folder, the reconciliation and, per partner, whether it
delivered or was carried forward. Exits non-zero when a run fails.

    python scripts/run_demo.py --landing demo/landing --out demo/releases --release demo-2026
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DAG_ID = "ctdc_annual_update"
QUIET = ("airflow", "alembic", "sqlalchemy", "httpx", "task", "py.warnings")


def configure_airflow() -> Path:
    """Environment for an in-process Airflow; must run before `airflow` is imported."""
    # Not <repo>/.airflow: DAGs that dag.test() creates are paused (Airflow's default), and a
    # later `make airflow-ui` there would find the synthesis DAG paused, deaf to the release
    # asset's events. With a home of its own, the demo leaves .airflow/ empty (Makefile).
    home = Path(
        os.environ.setdefault("AIRFLOW_HOME", str(REPO_ROOT / "demo" / "airflow"))
    ).resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO_ROOT / "dags")
    # The repository's plugins/ holds the ctdc_harmonizer package, not Airflow plugins: as a
    # plugins folder, Airflow would import each of its modules by file name. It is installed.
    plugins = os.environ.get("AIRFLOW__CORE__PLUGINS_FOLDER", "")
    if not plugins or Path(plugins).resolve() == REPO_ROOT / "plugins":
        os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(home / "plugins")
    # Airflow's own chatter down to warnings; the pipeline's counts stay visible.
    os.environ.setdefault(
        "AIRFLOW__LOGGING__NAMESPACE_LEVELS", " ".join(f"{n}=WARNING" for n in QUIET)
    )
    return home


def quiet_loggers() -> None:
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("ctdc_harmonizer").setLevel(logging.INFO)


def migrate_metadata_db() -> None:
    """`airflow db migrate`, skipped when the database is already at the head revision."""
    from airflow.utils import db
    from airflow.utils.session import create_session

    with create_session() as session:
        current = db._get_current_revision(session)
    if current and current == db._get_script_object().get_current_head():
        return
    print("Migrating the Airflow metadata database (first run only) ...", flush=True)
    db.upgradedb()


def mapped_partners_with_data(landing: Path) -> list[str]:
    from ctdc_harmonizer.mapping.partner import available_partners

    mapped = available_partners()
    present = [p for p in mapped if (landing / p).is_dir()]
    missing = sorted(set(mapped) - set(present))
    if missing:
        print(f"No landing folder for: {', '.join(missing)} (skipped)")
    return present


def load_dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO_ROOT / "dags"))
    if bag.import_errors:
        for path, error in bag.import_errors.items():
            print(f"DAG import error in {path}:\n{error}", file=sys.stderr)
        raise SystemExit(2)
    return bag.get_dag(DAG_ID)


def print_summary(release_dir: Path) -> bool:
    from ctdc_harmonizer.release import report

    recon = json.loads((release_dir / "reconciliation.json").read_text(encoding="utf-8"))
    table = report.reconciliation(release_dir)
    states = {s["partner"]: s for s in report.partner_states(release_dir)}
    header = ["partner", "this release", "read", "harmonized", "added", "retired", "records"]
    rows = []
    for r in table.itertuples():
        state = states[r.partner]
        text = report.STATE_TEXT[state["state"]].format(**{k: v or "-" for k, v in state.items()})
        rows.append([r.partner, text, r.rows_read, r.harmonized, r.added, r.retired, r.released])
    rows.append(["TOTAL", "", *(sum(int(row[i]) for row in rows) for i in range(2, 7))])
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list) -> str:
        padded = [f"{c!s:>{w}}" for c, w in zip(cells, widths, strict=True)]
        return "  ".join([f"{cells[0]!s:<{widths[0]}}", f"{cells[1]!s:<{widths[1]}}", *padded[2:]])

    print(f"\nRelease folder: {release_dir}")
    for name in sorted(p.name for p in release_dir.iterdir()):
        print(f"  {name}")
    print("\nPer partner (read: rows delivered now; records: in this release):")
    for row in [header, *rows]:
        print(line(row))
    print(f"Both ledgers hold ({'; '.join(recon['invariants'])}): {recon['invariant_holds']}")
    meta = json.loads((release_dir / "metadata.json").read_text(encoding="utf-8"))
    if meta.get("unmapped_partner_folders"):
        print(
            "Landing folders without a mapping (not read): "
            + ", ".join(meta["unmapped_partner_folders"])
        )
    return bool(recon["invariant_holds"])


def previous_label(release: str) -> str:
    """The year before `release`: demo-2026 -> demo-2025 (a label without a year: <label>-1)."""
    import re

    found = re.search(r"(19|20)\d{2}", release)
    if not found:
        return f"{release}-1"
    year = int(found.group(0))
    return release[: found.start()] + str(year - 1) + release[found.end() :]


def run_year(dag, conf: dict, out: Path) -> bool:
    print(f"\nRunning DAG {DAG_ID} for release {conf['release']} ...", flush=True)
    started = time.monotonic()
    # The demo approves its own release; a deployed run waits for the data team (approve task).
    run = dag.test(run_conf=conf, mark_success_pattern="approve")
    state = str(getattr(run.state, "value", run.state))
    print(f"DAG run {run.run_id}: {state} in {time.monotonic() - started:.1f} s")
    return state == "success" and print_summary(out / conf["release"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--landing", required=True, type=Path, help="landing folder")
    parser.add_argument("--out", required=True, type=Path, help="folder receiving releases")
    parser.add_argument("--release", required=True, help="release label, e.g. demo-2025")
    parser.add_argument("--partners", default="", help="comma-separated (default: all found)")
    parser.add_argument(
        "--no-second-year",
        action="store_true",
        help="run the first year only",
    )
    args = parser.parse_args(argv)
    landing, out = args.landing.resolve(), args.out.resolve()

    home = configure_airflow()
    quiet_loggers()
    migrate_metadata_db()
    quiet_loggers()  # importing Airflow reconfigures logging
    partners = [p for p in args.partners.split(",") if p] or mapped_partners_with_data(landing)
    # PRIVACY demo: a throwaway key; one person recorded by IOM and by the NGO.
    from ctdc_harmonizer.privacy import demo as privacy_demo
    from ctdc_harmonizer.samples import next_year

    privacy_demo.ensure_key()
    if privacy_demo.plant_overlap(landing):
        print("Demo: one IOM beneficiary is also in the NGO's sheet (typos: accent, day/month).")
    # The demo's own copy of the mappings: its second year corrects one row.
    mappings = next_year.copy_mappings(REPO_ROOT / "mappings", out.parent / "mappings")
    os.environ["CTDC_MAPPINGS_DIR"] = str(mappings)
    dag = load_dag()
    for task in dag.tasks:
        task.retries = 0  # data errors fail at once anyway; a demo does not wait on infra ones
    first = previous_label(args.release)
    conf = {"landing": str(landing), "out": str(out), "partners": partners}
    print(f"AIRFLOW_HOME={home}; partners: {', '.join(partners)}")
    if not run_year(dag, {**conf, "release": first}, out):
        return 1
    if args.no_second_year:
        return 0
    done = next_year.next_year(landing)
    next_year.correct_mapping(mappings)
    print(f"\nA year later: {'; '.join(f'{p}: {what}' for p, what in done.items())}.")
    if not run_year(dag, {**conf, "release": args.release}, out):
        return 1
    print("\n".join(privacy_demo.summary(out, first, args.release)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
