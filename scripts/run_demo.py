"""Run the ctdc_annual_update DAG end to end in this process (what `make demo` does).

Sets up a local Airflow (AIRFLOW_HOME from the environment, else <repo>/.airflow; SQLite;
no example DAGs; the repository's dags/ folder), migrates its metadata database when
needed, runs one DAG run with `dag.test()`, then prints the release folder and the
reconciliation of its row counts. Exits non-zero when the run fails.

    python scripts/run_demo.py --landing demo/landing --out demo/releases --release demo-2025
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
    home = Path(os.environ.setdefault("AIRFLOW_HOME", str(REPO_ROOT / ".airflow"))).resolve()
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
    recon = json.loads((release_dir / "reconciliation.json").read_text(encoding="utf-8"))
    columns = ["rows_read", "harmonized", "rejected", "excluded", "erased", "duplicates_merged"]
    header = ["partner", *columns, "unaccounted"]
    rows = [[p, *(e["totals"][c] for c in header[1:])] for p, e in recon["partners"].items()]
    rows.append(["TOTAL", *(recon["totals"][c] for c in header[1:])])
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list) -> str:
        padded = [f"{c!s:>{w}}" for c, w in zip(cells, widths, strict=True)]
        return "  ".join([f"{cells[0]!s:<{widths[0]}}", *padded[1:]])

    print(f"\nRelease folder: {release_dir}")
    for name in sorted(p.name for p in release_dir.iterdir()):
        print(f"  {name}")
    print(f"\nReconciliation ({recon['invariant']}):")
    for row in [header, *rows]:
        print(line(row))
    print(f"Invariant holds: {recon['invariant_holds']}")
    meta = json.loads((release_dir / "metadata.json").read_text(encoding="utf-8"))
    if meta.get("unmapped_partner_folders"):
        print(
            "Landing folders without a mapping (not read): "
            + ", ".join(meta["unmapped_partner_folders"])
        )
    return bool(recon["invariant_holds"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--landing", required=True, type=Path, help="landing folder")
    parser.add_argument("--out", required=True, type=Path, help="folder receiving releases")
    parser.add_argument("--release", required=True, help="release label, e.g. demo-2025")
    parser.add_argument("--partners", default="", help="comma-separated (default: all found)")
    parser.add_argument(
        "--no-privacy-step",
        action="store_true",
        help="skip the second release showing withdrawals honoured without withdrawals files",
    )
    args = parser.parse_args(argv)
    landing, out = args.landing.resolve(), args.out.resolve()

    home = configure_airflow()
    quiet_loggers()
    migrate_metadata_db()
    quiet_loggers()  # importing Airflow reconfigures logging
    partners = [p for p in args.partners.split(",") if p] or mapped_partners_with_data(landing)
    # PRIVACY demo step (1/2): a throwaway key; one person recorded by IOM and by the NGO.
    from ctdc_harmonizer.privacy import demo as privacy_demo

    privacy_demo.ensure_key()
    if privacy_demo.plant_overlap(landing):
        print("Demo: one IOM beneficiary is also in the NGO's sheet (typos: accent, day/month).")
    dag = load_dag()
    for task in dag.tasks:
        task.retries = 0  # data errors fail at once anyway; a demo does not wait on infra ones
    conf = {"landing": str(landing), "out": str(out), "release": args.release, "partners": partners}
    print(f"Running DAG {DAG_ID} (AIRFLOW_HOME={home}) for {', '.join(partners)} ...", flush=True)
    started = time.monotonic()
    # The demo approves its own release; a deployed run waits for the data team (approve task).
    run = dag.test(run_conf=conf, mark_success_pattern="approve")
    state = str(getattr(run.state, "value", run.state))
    print(f"\nDAG run {run.run_id}: {state} in {time.monotonic() - started:.1f} s")
    if state != "success":
        return 1
    if not print_summary(out / args.release):
        return 1
    if args.no_privacy_step:
        return 0
    # PRIVACY demo step (2/2): the next release, the partners' withdrawals files gone.
    following = f"{args.release}-next"
    removed = privacy_demo.take_away_withdrawal_files(landing)
    print(f"\nRunning release {following} with {removed} withdrawals file(s) removed ...")
    run = dag.test(run_conf={**conf, "release": following}, mark_success_pattern="approve")
    if str(getattr(run.state, "value", run.state)) != "success":
        return 1
    print("\n".join(privacy_demo.summary(out, args.release, following)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
