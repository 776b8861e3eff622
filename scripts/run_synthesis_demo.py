"""Run the ctdc_synthesis DAG in-process on the asset event of the demo's annual update.

Runs after scripts/run_demo.py (same AIRFLOW_HOME): finds the `ctdc://harmonized-release`
event that names the release, runs the synthesis DAG on exactly that event with `dag.test()`,
then prints where the public dataset landed, the epsilon spent and headline comparability.

    python scripts/run_synthesis_demo.py --out demo/releases --release demo-2025
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from run_demo import REPO_ROOT, configure_airflow, migrate_metadata_db, quiet_loggers

DAG_ID = "ctdc_synthesis"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="folder holding the releases")
    parser.add_argument("--release", required=True, help="release label, e.g. demo-2025")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    configure_airflow()
    quiet_loggers()
    migrate_metadata_db()
    quiet_loggers()
    from airflow.dag_processing.dagbag import DagBag

    from ctdc_harmonizer.synthesis.asset_run import latest_event_id, run_on_asset_event

    bag = DagBag(dag_folder=str(REPO_ROOT / "dags"))
    if bag.import_errors:
        print(f"DAG import errors: {sorted(bag.import_errors)}", file=sys.stderr)
        return 2
    dag = bag.get_dag(DAG_ID)
    for task in dag.tasks:
        task.retries = 0
    event = latest_event_id(args.release)
    if event is None:
        print(f"no ctdc://harmonized-release event for release {args.release}", file=sys.stderr)
        return 1
    print(f"Running DAG {DAG_ID} on asset event {event} (release {args.release}) ...", flush=True)
    started = time.monotonic()
    run = run_on_asset_event(dag, event)
    state = str(getattr(run.state, "value", run.state))
    print(f"\nDAG run {run.run_id}: {state} in {time.monotonic() - started:.1f} s")
    if state != "success":
        return 1
    restricted = out / "restricted" / args.release
    summary = json.loads((restricted / "synthesis.json").read_text(encoding="utf-8"))
    report = json.loads((restricted / "comparability.json").read_text(encoding="utf-8"))
    public = Path(summary["public_dir"])
    print(f"\nPublic dataset: {public}")
    for name in sorted(p.name for p in public.iterdir()):
        print(f"  {name}")
    print(
        f"Epsilon spent by this run: {summary['epsilon_spent_now']:g} "
        f"(release total {summary['epsilon_spent_release']:g}; "
        f"aggregates {'reused' if summary['reused'] else 'fitted'})"
    )
    method = json.loads((public / "metadata.json").read_text(encoding="utf-8"))["method"]
    print(
        f"DP aggregates computed by the '{method['aggregation_engine']}' engine "
        "(schemas/synthesis_v1.yaml aggregation.engine; docs/privacy.md, section 10)"
    )
    print(f"Restricted comparability report: {restricted / 'comparability.html'}")
    for name, head in report["headline"].items():
        if not isinstance(head, dict):
            continue
        print(
            f"  {name} sampler: mean abs. error vs DP aggregates by length "
            f"{head['mae_vs_dp_by_length']}, vs sensitive {head['mae_vs_sensitive_by_length']}, "
            f"fabricated combinations {head['fabricated_combinations']}"
        )
    if "own_at_least_as_accurate" in report["headline"]:
        print(
            f"  own sampler at least as accurate: {report['headline']['own_at_least_as_accurate']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
