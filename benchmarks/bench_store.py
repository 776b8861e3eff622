"""Benchmark: the store-based annual update at 1M stored records (issue 16, item 8).

    python benchmarks/bench_store.py                          # 4 x 250,000 records
    python benchmarks/bench_store.py --records-per-partner 20000 --increment 1000  # a try-out

Generates N records per bundled partner (in a child process, timed apart), then measures, each
`ctdc run` in a fresh child process with its process tree's memory sampled:

(a) `initial`: the first release from the four deliveries, into an empty store;
(b) `incremental`: the next release, in which only the hotline (incremental mode) delivers
    `--increment` new reports: every other partner carried, the whole release written,
    checked and handed off;
(c) `full`: the same release built from all deliveries at once, into a fresh store;
(d) `reharmonize`: from the store as (a) left it, the next release after a change to the
    hotline's mapping: its whole history harmonized again, nothing delivered;
(e) `original`: the hotline's first delivery alone, into a fresh store (a 250k-row release);
(e2) `original_beside`: the hotline's first delivery into a store that already holds the other
    three partners (made by `others`, their first delivery alone, not compared): the same
    1M-row release as (d), so (d) / (e2) compares like with like.

Reports wall and CPU time, the peak RSS of the largest process (sampled, and the kernel's
ru_maxrss), the per-step times `ctdc run` logs, the machine's load average, and whether (b)
and (c) made the same release table (SHA-256 of harmonized.parquet and harmonized.csv).
Aims: (b) <= 1/3 of (c); (d) <= (e) (and, reported beside it, (d) / (e2)); the largest
process under 1 GB. Appends a JSON line to
benchmarks/out/store.jsonl. Prints counts, sizes and times only, never a data value.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cli import (  # noqa: E402
    MIB,
    Children,
    _commit,
    _psutil_available,
    adopt_orphans,
    ctdc_run_command,
    generate_samples,
    measure,
)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "out"
PARTNERS = ["case_management", "iom", "hotline", "ctdc_legacy"]
INCREMENTAL = "hotline"
# One row of the hotline's mapping corrected: its mapping hash changes, its history is
# harmonized again.
CORRECTION = (
    "victim_gender,Transgender Male,gender,Trans/Transgender/NonConforming,narrower,",
    "victim_gender,Transgender Male,gender,Man,broader,",
)
STEP_LINE = re.compile(
    r"step (\S+)(?: \((\S+)\))? took ([0-9.]+) s \(CPU ([0-9.]+) s; peak ([0-9]+) MiB\)"
)
AIM_BYTES = 10**9


def make_increment(folder: str, records: int) -> None:
    """`records` new hotline reports (new report ids) in a file of their own, beside the
    delivered one: an incremental delivery. Run in a child (it reads the 250k reports)."""
    folder_path = Path(folder)
    source = sorted(folder_path.glob("hotline_reports_*.jsonl"))[0]
    with source.open(encoding="utf-8") as f:
        reports = [json.loads(next(f)) for _ in range(records)]
    with (folder_path / "hotline_reports_increment.jsonl").open("w", encoding="utf-8") as f:
        for i, report in enumerate(reports):
            f.write(json.dumps(dict(report, report_id=f"HL-INC-{i:07d}")) + "\n")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_ctdc(
    children: Children, name: str, landing: Path, out: Path, release: str, mappings: Path, *extra
) -> dict:
    command = ctdc_run_command(landing, out, release, mappings=mappings) + list(extra)
    load = os.getloadavg()
    measured = measure(
        command, children.env, children.logs, name, children.sampling, children.adopting
    )
    if measured.returncode != 0:
        raise SystemExit(
            f"bench: {name} failed (exit {measured.returncode}); see {measured.stderr}"
        )
    steps: dict[str, dict] = {}  # per step: wall, CPU, the peak RSS of its process so far
    for match in STEP_LINE.finditer(measured.stderr.read_text(encoding="utf-8", errors="replace")):
        step, partner, seconds, cpu, peak = match.groups()
        steps[f"{step} ({partner})" if partner else step] = {
            "s": float(seconds),
            "cpu_s": float(cpu),
            "peak_mib": int(peak),
        }
    folder = out / release
    recon = json.loads((folder / "reconciliation.json").read_text(encoding="utf-8"))
    largest = max(measured.memory["largest_peak_mib"], measured.ru_maxrss_mib)
    result = {
        "wall_s": round(measured.wall_s, 2),
        "cpu_s": round(measured.cpu_s, 2),
        # Every process of the run's tree (None where it cannot be known: adopt_orphans).
        "tree_cpu_s": None if measured.tree_cpu_s is None else round(measured.tree_cpu_s, 2),
        "largest_peak_mib": round(largest),
        "largest_is_main": measured.memory["largest_is_main"],
        "main_peak_mib": round(measured.memory["main_peak_mib"]),
        "tree_peak_mib": round(measured.memory["tree_peak_mib"]),
        "load_average": [round(x, 2) for x in load],
        "rows": recon["totals"].get("harmonized"),
        "parquet_sha256": _sha256(folder / "harmonized.parquet"),
        "csv_sha256": _sha256(folder / "harmonized.csv"),
        "steps": steps,
    }
    result["steps_cpu_s"] = step_cpu(result)
    print(
        f"bench: {name}: {result['wall_s']:.1f} s wall, "
        f"{result['tree_cpu_s'] or result['cpu_s']:.1f} s CPU, largest "
        f"process {result['largest_peak_mib']} MiB, load {load[0]:.2f}",
        flush=True,
    )
    return result


def step_cpu(run: dict) -> float:
    """CPU seconds of every logged step, whichever process ran it (the run's own CPU figure
    misses the fork server's workers: see the README's caveat)."""
    return round(sum(step["cpu_s"] for step in run["steps"].values()), 2)


def _cpu_ratio(a: dict, b: dict) -> float | None:
    return round(step_cpu(a) / step_cpu(b), 3) if step_cpu(b) else None


def _copy_store(source: Path, target: Path) -> None:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".work", ".locks"))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records-per-partner", type=int, default=250_000)
    parser.add_argument("--increment", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--sample-ms", type=float, default=50)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument(
        "--results", type=Path, default=RESULTS / "store.jsonl", help="JSON lines appended to"
    )
    parser.add_argument("--make-increment", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_increment:
        make_increment(args.make_increment[0], int(args.make_increment[1]))
        return 0
    work = Path(tempfile.mkdtemp(prefix="ctdc-bench-store-"))
    logs = work / "logs"
    logs.mkdir()
    env = dict(os.environ)
    if not env.get("CTDC_PSEUDONYM_KEY", "").strip():
        env["CTDC_PSEUDONYM_KEY"] = secrets.token_hex(32)  # throwaway, as the demo's
    sampling = {"interval": args.sample_ms / 1000, "use_psutil": _psutil_available()}
    children = Children(
        env=env, logs=logs, keep=args.keep, sampling=sampling, adopting=adopt_orphans()
    )
    python = sys.executable

    started = time.perf_counter()
    first = work / "landing-1"  # every partner's first delivery
    generate_samples(first, args.records_per_partner, args.seed, PARTNERS, env)
    for path in first.glob("*/withdrawals.csv"):
        path.unlink()  # the benchmark measures deliveries, not erasures
    second = work / "landing-2"  # the same, and the hotline's increment beside its first file
    shutil.copytree(first, second)
    subprocess.run(
        [python, __file__, "--make-increment", str(second / INCREMENTAL), str(args.increment)],
        check=True,
    )
    hotline_only = work / "landing-hotline"
    shutil.copytree(first / INCREMENTAL, hotline_only / INCREMENTAL)
    others_only = work / "landing-others"  # every partner's first delivery but the hotline's
    shutil.copytree(first, others_only, ignore=shutil.ignore_patterns(INCREMENTAL))
    from ctdc_harmonizer.paths import mappings_dir

    mappings = work / "mappings"
    shutil.copytree(mappings_dir(), mappings)
    corrected = work / "mappings-corrected"
    shutil.copytree(mappings_dir(), corrected)
    values = corrected / INCREMENTAL / "values.csv"
    text = values.read_text(encoding="utf-8")
    if CORRECTION[0] not in text:
        raise SystemExit("bench: the hotline mapping row to correct is not there")
    values.write_text(text.replace(*CORRECTION), encoding="utf-8")
    generated = time.perf_counter() - started

    runs = {}
    store = work / "store"
    runs["initial"] = run_ctdc(children, "initial", first, store, "2024", mappings)
    _copy_store(store, work / "store-d")
    runs["incremental"] = run_ctdc(children, "incremental", second, store, "2025", mappings)
    runs["full"] = run_ctdc(children, "full", second, work / "fresh", "2025", mappings)
    runs["reharmonize"] = run_ctdc(
        children, "reharmonize", first, work / "store-d", "2025", corrected
    )
    runs["original"] = run_ctdc(
        children, "original", hotline_only, work / "hotline", "2024", mappings
    )
    # (e2): the store holds the three other partners (as (a) left them, but without the
    # hotline); the hotline's first delivery then makes the same 1M-row release as (d).
    runs["others"] = run_ctdc(children, "others", others_only, work / "beside", "2024", mappings)
    runs["original_beside"] = run_ctdc(
        children, "original_beside", first, work / "beside", "2025", mappings
    )

    inc, full = runs["incremental"], runs["full"]
    same = (
        inc["parquet_sha256"] == full["parquet_sha256"] and inc["csv_sha256"] == full["csv_sha256"]
    )
    largest = max(r["largest_peak_mib"] for r in runs.values())
    report = {
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": _commit(),
        "records_per_partner": args.records_per_partner,
        "increment": args.increment,
        "generate_s": round(generated, 1),
        "runs": runs,
        "incremental_over_full": round(inc["wall_s"] / full["wall_s"], 3),
        "reharmonize_over_original": round(
            runs["reharmonize"]["wall_s"] / runs["original"]["wall_s"], 3
        ),
        "reharmonize_over_original_beside": round(
            runs["reharmonize"]["wall_s"] / runs["original_beside"]["wall_s"], 3
        ),
        "reharmonize_over_original_cpu": _cpu_ratio(runs["reharmonize"], runs["original"]),
        "reharmonize_over_original_beside_cpu": _cpu_ratio(
            runs["reharmonize"], runs["original_beside"]
        ),
        "incremental_over_full_cpu": _cpu_ratio(inc, full),
        "same_release_table": same,
        "largest_peak_mib": largest,
        "aims": {
            "incremental_within_third_of_full": inc["wall_s"] <= full["wall_s"] / 3,
            "reharmonize_not_dearer_than_original": runs["reharmonize"]["wall_s"]
            <= runs["original"]["wall_s"],
            "reharmonize_not_dearer_than_original_beside": runs["reharmonize"]["wall_s"]
            <= runs["original_beside"]["wall_s"],
            "largest_process_under_1gb": largest * MIB < AIM_BYTES,
        },
        "cpus": len(os.sched_getaffinity(0)),
    }
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=1))
    for name, run in runs.items():
        steps = ", ".join(
            f"{k} {v['s']:.1f}/{v['cpu_s']:.1f}/{v['peak_mib']}"
            for k, v in sorted(run["steps"].items())
        )
        print(f"bench: {name} steps (wall s/CPU s/peak MiB): {steps or 'not logged'}")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    with args.results.open("a") as handle:
        handle.write(json.dumps(report) + "\n")
    if args.keep:
        print(f"bench: work folder kept: {work}")
    else:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
