"""Benchmark: `ctdc run` against its floor, measured in the same run on the same files.

    python benchmarks/bench_cli.py --records-per-partner 33334   # ~100k in total
    python benchmarks/bench_cli.py --records-per-partner 250000  # ~1M with four partners

Generates N records per partner (timed apart, not counted), then, in fresh child processes
one after the other:

1. the floor (benchmarks/floor.py): the same delivered files parsed by the fastest reader of
   each format, and a 27-column result of as many rows written as CSV and Parquet;
2. `ctdc run` on them.

Reports the wall time of each (interpreter start-up and imports included in both), the ratio
run / floor, rows/s, the floor per format and per partner, and the peak resident memory of
each child (ru_maxrss of the child and its descendants). Appends a JSON line to
benchmarks/out/results.jsonl. Prints only counts, sizes and times, never a data value: the
children's output goes to log files in the work folder, which is kept when a child fails.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ctdc_harmonizer import samples
from ctdc_harmonizer.codebook import default_codebook
from ctdc_harmonizer.config import load_partner
from ctdc_harmonizer.paths import mappings_dir
from ctdc_harmonizer.reader import find_extract_files

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "out"
RELEASE = "bench-2025"
MIB = 1024 * 1024


@dataclass
class Measured:
    """One child process: wall time, CPU time and peak RSS of it and its descendants."""

    wall_s: float
    cpu_s: float
    ru_maxrss_mib: float
    returncode: int
    stdout: Path
    stderr: Path


def measure(command: list[str], env: dict, logs: Path, name: str) -> Measured:
    """Run a child to its end, its output to log files (never to the terminal)."""
    stdout, stderr = logs / f"{name}.out", logs / f"{name}.err"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        # wait4: the rusage of this child alone (with the descendants it waited for), so the
        # floor's and the run's peaks stay apart, unlike RUSAGE_CHILDREN of this process.
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    return Measured(
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        ru_maxrss_mib=usage.ru_maxrss / 1024,  # KiB on Linux
        returncode=child.returncode,
        stdout=stdout,
        stderr=stderr,
    )


def floor_spec(landing: Path, partners: list[str], excel_dtypes: str) -> dict:
    """The files `ctdc run` reads (same patterns, same exclusions) with each partner's reader
    settings, and the codebook's column names for the written result."""
    files = []
    for partner in partners:
        config = load_partner(mappings_dir() / partner)
        spec = config.reader
        for path in find_extract_files(config, landing):
            files.append(
                {
                    "partner": partner,
                    "format": spec.format,
                    "path": str(path),
                    "sheet": spec.sheet,
                    "header_row": spec.header_row,
                    "data_start_row": spec.data_start_row,
                    "delimiter": spec.csv_delimiter,
                    "encoding": spec.encoding,
                }
            )
    return {
        "columns": list(default_codebook().columns),
        "excel_dtypes": excel_dtypes,
        "files": files,
    }


def run_floor(
    spec_path: Path, target: Path, env: dict, logs: Path, name: str, keep: bool
) -> dict | None:
    command = [sys.executable, str(HERE / "floor.py"), str(spec_path), str(target)]
    measured = measure(command, env, logs, name)
    if measured.returncode != 0:
        print(f"bench: the floor failed (exit code {measured.returncode}); see {measured.stderr}")
        return None
    inside = json.loads(measured.stdout.read_text(encoding="utf-8"))
    by_format, by_partner = defaultdict(float), defaultdict(float)
    for entry in inside["files"]:
        by_format[entry["format"]] += entry["read_s"]
        by_partner[entry["partner"]] += entry["read_s"]
    if not keep:
        shutil.rmtree(target, ignore_errors=True)
    return {
        "floor_s": measured.wall_s,
        "cpu_s": measured.cpu_s,
        "peak_rss_mib": measured.ru_maxrss_mib,
        "rows": inside["rows"],
        "files": len(inside["files"]),
        "read_s_by_format": dict(by_format),
        "read_s_by_partner": dict(by_partner),
        # Before the script's first line: the interpreter's own start-up.
        "startup_s": measured.wall_s - inside["script_s"],
        "import_s": inside["import_s"],
        "build_s": inside["build_s"],
        "write_csv_s": inside["write_csv_s"],
        "write_parquet_s": inside["write_parquet_s"],
        "csv_mib": inside["csv_bytes"] / MIB,
        "parquet_mib": inside["parquet_bytes"] / MIB,
        "threads": inside["threads"],
    }


def run_ctdc(
    landing: Path,
    out: Path,
    partners: list[str],
    warehouse: str | None,
    env: dict,
    logs: Path,
    name: str,
    keep: bool,
) -> dict | None:
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
        RELEASE,
        "--partners",
        ",".join(partners),
        # A SQLite file of its own: a benchmark never loads into $CTDC_WAREHOUSE_URL.
        "--warehouse",
        warehouse or f"sqlite:///{out / 'warehouse.sqlite'}",
    ]
    measured = measure(command, env, logs, name)
    if measured.returncode != 0:
        print(f"bench: ctdc run failed (exit code {measured.returncode}); see {measured.stderr}")
        return None
    release = out / RELEASE
    recon = json.loads((release / "reconciliation.json").read_text(encoding="utf-8"))
    result = {
        "run_s": measured.wall_s,
        "cpu_s": measured.cpu_s,
        "peak_rss_mib": measured.ru_maxrss_mib,
        "rows_read": recon["totals"]["rows_read"],
        "rows_harmonized": recon["totals"]["harmonized"],
        "csv_mib": (release / "harmonized.csv").stat().st_size / MIB,
        "parquet_mib": (release / "harmonized.parquet").stat().st_size / MIB,
    }
    if not keep:  # a 1M-record release is large; pairs would pile them up
        shutil.rmtree(out, ignore_errors=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records-per-partner", type=int, default=33334)
    parser.add_argument("--partners", default=",".join(samples.available()))
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--excel-dtypes",
        choices=["string", "infer"],
        default="string",
        help="how the floor reads the workbook: every cell as text, or types inferred from all "
        "rows (both read every cell)",
    )
    parser.add_argument("--warehouse", help="SQLAlchemy URL (default: a SQLite file per run)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders")
    args = parser.parse_args()
    partners = [p for p in args.partners.split(",") if p]
    work = Path(tempfile.mkdtemp(prefix="ctdc-bench-"))
    landing, logs = work / "landing", work / "logs"
    logs.mkdir()
    load_start = os.getloadavg()

    started = time.perf_counter()
    samples.generate_all(landing, args.records_per_partner, args.seed, partners)
    generated = time.perf_counter() - started

    spec_path = work / "floor.json"
    spec_path.write_text(json.dumps(floor_spec(landing, partners, args.excel_dtypes)))
    # PRIVACY: a run needs the pseudonym key; a benchmark makes a throwaway one, as the demo.
    env = dict(os.environ)
    if not env.get("CTDC_PSEUDONYM_KEY", "").strip():
        env["CTDC_PSEUDONYM_KEY"] = secrets.token_hex(32)
        print("bench: throwaway pseudonym key (CTDC_PSEUDONYM_KEY not set)")

    floor = run_floor(spec_path, work / "floor-out", env, logs, "floor", args.keep)
    run = floor and run_ctdc(
        landing, work / "out", partners, args.warehouse, env, logs, "run", args.keep
    )
    if not floor or not run:
        print(f"bench: work folder kept: {work}")
        return 1
    report = {
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "records_per_partner": args.records_per_partner,
        "partners": partners,
        "rows_read": run["rows_read"],
        "rows_harmonized": run["rows_harmonized"],
        "generate_s": round(generated, 1),
        "floor_s": round(floor["floor_s"], 2),
        "run_s": round(run["run_s"], 2),
        "ratio": round(run["run_s"] / floor["floor_s"], 2),
        "rows_per_s": round(run["rows_read"] / run["run_s"]),
        "peak_rss_mib": round(run["peak_rss_mib"]),
        "floor": _rounded(floor),
        "run": _rounded(run),
        "excel_dtypes": args.excel_dtypes,
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "cpus": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
    }
    print(json.dumps(report, indent=2))
    RESULTS.mkdir(exist_ok=True)
    with (RESULTS / "results.jsonl").open("a") as handle:
        handle.write(json.dumps(report) + "\n")
    if not args.keep:
        shutil.rmtree(work)
    return 0


def _rounded(values):
    if isinstance(values, dict):
        return {k: _rounded(v) for k, v in values.items()}
    if isinstance(values, float):
        return round(values, 3)
    return values


if __name__ == "__main__":
    sys.exit(main())
