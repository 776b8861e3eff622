"""Benchmark the synthesis at several release sizes: fit, sampling (both samplers), whole run.

    python benchmarks/bench_synthesis.py --sizes 20000,65000,260000
    python benchmarks/bench_synthesis.py --sizes 20000 --pacsynth-up-to 20000

For each size, a release is made once with the project's own pipeline from seeded sample
extracts (size / 4 records per partner; cached in benchmarks/out/releases/), then, in a fresh
child process per size, every synthesis step runs in a row as the DAG runs them. Reported per
size: seconds of pac-synth's fit, of the project's sampler, of pac-synth's sampler (only up to
--pacsynth-up-to rows: ~13.5 min at 200k rows on one core), of the evaluation and of all steps;
the peak resident memory of the child process; the headline comparability. One JSON line per
size is appended to benchmarks/out/synthesis.jsonl. Not a timed test: run it by hand.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"


def make_release(rows: int, seed: int) -> Path:
    """A harmonized release of about `rows` rows (cached), made by the annual update."""
    from ctdc_harmonizer import samples
    from ctdc_harmonizer.run.local import run

    root = OUT / "releases" / f"n{rows}"
    release = f"bench{rows // 1000}k-2025"  # no digits a year could be read from
    if (root / release / "handoff" / "manifest.json").is_file():
        return root
    per_partner = rows // len(samples.available()) + 1
    samples.generate_all(root / "landing", per_partner, seed)
    run(str(root / "landing"), str(root), release, warehouse_url=None)
    return root


def child(root: Path, rows: int, pacsynth_up_to: int, threads: int) -> dict:
    """All synthesis steps in a row, timed (runs in a fresh process per size)."""
    import os

    from ctdc_harmonizer.pipeline import local
    from ctdc_harmonizer.pipeline.synthesis import SYNTHESIS
    from ctdc_harmonizer.synthesis.plan import plan_synthesis

    os.environ["CTDC_BENCH"] = "1"
    release = f"bench{rows // 1000}k-2025"  # no digits a year could be read from
    restricted = root / "restricted" / release
    if restricted.exists():  # a fresh fit each time: a benchmark spends its own budget
        import shutil

        shutil.rmtree(restricted)
    (root / "warehouse.sqlite").unlink(missing_ok=True)
    plan = plan_synthesis(release=release, out=str(root))
    config = plan.config.model_copy(
        update={
            "sampling": plan.config.sampling.model_copy(
                update={"threads": threads, "compare_with_pacsynth_up_to_rows": pacsynth_up_to}
            ),
            "budget": plan.config.budget.model_copy(update={"lifetime_epsilon": 1000.0}),
        }
    )
    plan = plan.model_copy(update={"config": config})
    timings, done = {}, {SYNTHESIS.plan_step.name: plan}
    started = time.perf_counter()
    for step in SYNTHESIS.release_steps:  # the declared steps, each timed
        t0 = time.perf_counter()
        done[step.name] = local.call_step(SYNTHESIS, step, plan, done)
        timings[step.name] = round(time.perf_counter() - t0, 2)
    total = round(time.perf_counter() - started, 2)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results = {name: r.model_dump() for name, r in done.items() if name != "plan_synthesis"}
    fitted = results["fit_aggregates"]
    return {
        "rows": results["verify_handoff"]["rows"],
        "seconds_total": total,
        "seconds_by_step": timings,
        "seconds_fit_pacsynth": fitted["fit_seconds"],
        "seconds_pacsynth_sampler": fitted["pacsynth_sample_seconds"],
        "seconds_own_sampler": results["sample"]["sample_seconds"],
        "pacsynth_sampler_ran": results["verify_handoff"]["rows"] <= pacsynth_up_to,
        "combinations": fitted["combinations"],
        "peak_rss_mib": round(peak, 1),
        "headline": results["evaluate"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20000,65000,260000")
    parser.add_argument("--pacsynth-up-to", type=int, default=20000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        root, rows = args.child.rsplit(":", 1)
        print(json.dumps(child(Path(root), int(rows), args.pacsynth_up_to, args.threads)))
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    for rows in [int(s) for s in args.sizes.split(",") if s]:
        t0 = time.perf_counter()
        root = make_release(rows, args.seed)
        made = round(time.perf_counter() - t0, 1)
        command = [sys.executable, __file__, "--child", f"{root}:{rows}"]
        command += ["--pacsynth-up-to", str(args.pacsynth_up_to), "--threads", str(args.threads)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result["seconds_making_release"] = made
        print(json.dumps(result, indent=2))
        with open(OUT / "synthesis.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
