"""Benchmark: generate N records per partner, then time `ctdc run` on them.

    python benchmarks/bench_cli.py --records-per-partner 33334   # ~100k in total
    python benchmarks/bench_cli.py --records-per-partner 250000  # ~1M with four partners

Reports wall time, rows/s and the peak resident memory of the `ctdc run`
process (ru_maxrss of the child), and appends a JSON line to
benchmarks/out/results.jsonl. Generation time is reported apart.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ctdc_harmonizer import samples


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records-per-partner", type=int, default=33334)
    parser.add_argument("--partners", default=",".join(samples.available()))
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders")
    args = parser.parse_args()
    partners = [p for p in args.partners.split(",") if p]
    work = Path(tempfile.mkdtemp(prefix="ctdc-bench-"))
    landing, out = work / "landing", work / "out"

    started = time.perf_counter()
    samples.generate_all(landing, args.records_per_partner, args.seed, partners)
    generated = time.perf_counter() - started

    command = [
        sys.executable,
        "-m",
        "ctdc_harmonizer.cli",
        "run",
        "--landing",
        str(landing),
        "--out",
        str(out),
        "--release",
        "bench-2025",
        "--partners",
        ",".join(partners),
    ]
    started = time.perf_counter()
    # PRIVACY: a run needs the pseudonym key; a benchmark makes a throwaway one, as the demo.
    env = dict(os.environ)
    if not env.get("CTDC_PSEUDONYM_KEY", "").strip():
        env["CTDC_PSEUDONYM_KEY"] = secrets.token_hex(32)
        print("bench: throwaway pseudonym key (CTDC_PSEUDONYM_KEY not set)")
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if result.returncode != 0:
        print(result.stderr[-3000:], file=sys.stderr)
        return result.returncode
    recon = json.loads((out / "bench-2025" / "reconciliation.json").read_text())
    rows = recon["totals"]["rows_read"]
    report = {
        "records_per_partner": args.records_per_partner,
        "partners": partners,
        "rows_read": rows,
        "rows_harmonized": recon["totals"]["harmonized"],
        "generate_s": round(generated, 1),
        "run_s": round(elapsed, 1),
        "rows_per_s": round(rows / elapsed),
        "peak_rss_mib": round(peak_mib),
        "cpus": len(__import__("os").sched_getaffinity(0)),
        "python": platform.python_version(),
    }
    print(json.dumps(report, indent=2))
    results = Path(__file__).parent / "out"
    results.mkdir(exist_ok=True)
    with (results / "results.jsonl").open("a") as handle:
        handle.write(json.dumps(report) + "\n")
    if not args.keep:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
