"""Benchmark: `ctdc run` against its floor, measured in the same run on the same files.

    python benchmarks/bench_cli.py --records-per-partner 33334   # ~100k in total
    python benchmarks/bench_cli.py --records-per-partner 250000  # ~1M with four partners
    python benchmarks/bench_cli.py --records-per-partner 10000 --repeat 3

Generates N records per partner (timed apart, not counted), then, in fresh child processes
one after the other, K times (--repeat K, default 1):

1. the floor (benchmarks/floor.py): the same delivered files parsed by the fastest reader of
   each format, and a 27-column result of as many rows written as CSV and Parquet;
2. `ctdc run` on them.

Reports the wall time of each (interpreter start-up and imports included in both), the ratio
run / floor (the median of the pairs' ratios), rows/s, the floor per format and per partner,
the CPU time of each child's whole process tree (on Linux, where this process becomes the
subreaper of its descendants), and memory: the process tree of each child is sampled every
50 ms (peak RSS of the main process, of the largest single process, of the sum over the
tree), next to the kernel's ru_maxrss of the child and its descendants. Prints a summary
and appends a JSON line to benchmarks/out/results.jsonl (or --results). Prints only counts,
sizes and times, never a data value: the children's output goes to log files in the work
folder, which is kept when a child fails.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from statistics import median

from ctdc_harmonizer import samples
from ctdc_harmonizer.codebook import default_codebook
from ctdc_harmonizer.ingest.files import find_extract_files
from ctdc_harmonizer.mapping.partner import load_partner
from ctdc_harmonizer.paths import mappings_dir

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "out"
RELEASE = "bench-2025"
MIB = 1024 * 1024


def _psutil_available() -> bool:
    try:
        import psutil  # noqa: F401
    except ImportError:
        return False
    return True


class TreeSampler(threading.Thread):
    """Samples the resident set size (RSS) of a process and all its descendants every
    `interval` seconds, until stopped: the peak of each process and the peak of their sum.

    With psutil when installed, else from /proc (<pid>/task/*/children for the tree,
    <pid>/status VmRSS for the size). A process that lives shorter than one interval, or a
    spike between two samples, is missed: ru_maxrss (kernel, exact) is the cross-check for
    the largest process; the sum over the tree has no such kernel figure.
    """

    def __init__(self, pid: int, interval: float, use_psutil: bool) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.source = "psutil" if use_psutil else "/proc"
        self.peaks: dict[int, int] = {}  # pid -> peak RSS (bytes)
        self.tree_peak = 0  # peak of the sum over the processes alive at one sample
        self.most_processes = 0
        self.samples = 0
        self.cpu_s = 0.0  # this thread's own CPU time: the cost of sampling
        self._done = threading.Event()
        self._processes: dict = {}

    def run(self) -> None:
        started = time.thread_time()
        while True:
            self.sample()
            if self._done.wait(self.interval):
                break
        self.cpu_s = time.thread_time() - started

    def stop(self) -> None:
        self._done.set()
        self.join()

    def sample(self) -> None:
        sizes = self._psutil_sizes() if self.source == "psutil" else self._proc_sizes()
        sizes = {pid: rss for pid, rss in sizes.items() if rss}  # 0: gone, or a zombie
        if not sizes:
            return
        self.samples += 1
        for pid, rss in sizes.items():
            self.peaks[pid] = max(self.peaks.get(pid, 0), rss)
        self.tree_peak = max(self.tree_peak, sum(sizes.values()))
        self.most_processes = max(self.most_processes, len(sizes))

    def _psutil_sizes(self) -> dict[int, int]:
        import psutil

        try:
            root = self._processes.get(self.pid) or psutil.Process(self.pid)
            self._processes[self.pid] = root
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:  # ended (or a zombie) between two samples
            return {}
        sizes = {}
        for process in tree:
            # The same Process object from one sample to the next (psutil checks that the pid
            # was not reused); a new one for a pid seen for the first time.
            process = self._processes.setdefault(process.pid, process)
            try:
                sizes[process.pid] = process.memory_info().rss
            except psutil.Error:
                continue
        return sizes

    def _proc_sizes(self) -> dict[int, int]:
        sizes, todo = {}, [self.pid]
        while todo:
            pid = todo.pop()
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                tasks = list(Path(f"/proc/{pid}/task").iterdir())
            except OSError:
                continue
            rss = next((ln.split()[1] for ln in status.splitlines() if ln.startswith("VmRSS:")), 0)
            sizes[pid] = int(rss) * 1024  # kB; absent for a zombie
            for task in tasks:
                try:
                    todo.extend(int(c) for c in (task / "children").read_text().split())
                except OSError:
                    continue
        return sizes

    def report(self) -> dict:
        others = sorted((v for k, v in self.peaks.items() if k != self.pid), reverse=True)
        largest = max(self.peaks.values(), default=0)
        return {
            "sampler": self.source,
            "interval_ms": round(self.interval * 1000),
            "samples": self.samples,
            "sampler_cpu_s": self.cpu_s,
            "processes_seen": len(self.peaks),
            "most_processes_at_once": self.most_processes,
            "main_peak_mib": self.peaks.get(self.pid, 0) / MIB,
            "largest_peak_mib": largest / MIB,
            "largest_is_main": largest > 0 and self.peaks.get(self.pid, 0) == largest,
            "tree_peak_mib": self.tree_peak / MIB,
            "descendant_peaks_mib": [v / MIB for v in others],
        }


# prctl(2): make this process the "subreaper" of its descendants.
PR_SET_CHILD_SUBREAPER = 36
# How long the processes a child leaves behind may take to end after it (the fork server
# and the resource tracker of `ctdc run` end as soon as they see its pipe close).
ORPHANS_WAIT_S = 10.0


def adopt_orphans() -> bool:
    """On Linux, make this process the subreaper of everything it starts: a process whose
    parent ends before it (`ctdc run`'s fork server and resource tracker outlive its main
    process by a moment, and the workers are the fork server's children) comes to this
    process instead of init. Waiting for it then adds its CPU time, and that of every
    process it waited for, to this process's RUSAGE_CHILDREN: the whole tree's CPU, exact.
    False where that is not possible (the tree's CPU is then not reported)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _reap_orphans(deadline_s: float) -> bool:
    """Wait for the processes the measured child left behind (they came here: see
    adopt_orphans); whether all of them ended in time. Nothing else of this process runs
    while a child is measured, so every child of it now is one of them."""
    deadline = time.perf_counter() + deadline_s
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:  # none left
            return True
        if pid == 0:  # some still running
            if time.perf_counter() > deadline:
                return False
            time.sleep(0.01)


@dataclass
class Measured:
    """One child process: wall time, CPU time and peak RSS of it and its descendants."""

    wall_s: float
    cpu_s: float
    # Every process of its tree (None: not known, see adopt_orphans).
    tree_cpu_s: float | None
    ru_maxrss_mib: float
    memory: dict
    returncode: int
    stdout: Path
    stderr: Path


def measure(
    command: list[str], env: dict, logs: Path, name: str, sampling: dict, adopting: bool
) -> Measured:
    """Run a child to its end, its output to log files (never to the terminal), sampling
    the memory of its process tree meanwhile. `adopting`: this process is the subreaper of
    its descendants (adopt_orphans), so the whole tree's CPU time is known."""
    stdout, stderr = logs / f"{name}.out", logs / f"{name}.err"
    children_before = _children_cpu_s()
    with stdout.open("wb") as out, stderr.open("wb") as err:
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        sampler = TreeSampler(child.pid, **sampling)
        sampler.start()
        # wait4: the rusage of this child alone (with the descendants it waited for), so the
        # floor's and the run's peaks stay apart, unlike RUSAGE_CHILDREN of this process.
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        sampler.stop()
    child.returncode = os.waitstatus_to_exitcode(status)
    all_ended = _reap_orphans(ORPHANS_WAIT_S) if adopting else False
    if adopting and not all_ended:
        print(f"bench: {name}: processes it started still run after {ORPHANS_WAIT_S:.0f} s")
    return Measured(
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        tree_cpu_s=_children_cpu_s() - children_before if all_ended else None,
        ru_maxrss_mib=usage.ru_maxrss / 1024,  # KiB on Linux
        memory=sampler.report(),
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
                    "sheet": spec.sheet if spec.sheet is not None else 0,  # the one visible sheet
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


@dataclass
class Children:
    """What every measured child shares: its environment, where its output goes, whether
    its outputs are kept, how its memory is sampled."""

    env: dict
    logs: Path
    keep: bool
    sampling: dict
    adopting: bool  # this process is its descendants' subreaper (adopt_orphans)


def run_floor(children: Children, spec_path: Path, target: Path, name: str) -> dict | None:
    command = [sys.executable, str(HERE / "floor.py"), str(spec_path), str(target)]
    measured = measure(
        command, children.env, children.logs, name, children.sampling, children.adopting
    )
    if measured.returncode != 0:
        print(f"bench: the floor failed (exit code {measured.returncode}); see {measured.stderr}")
        return None
    inside = json.loads(measured.stdout.read_text(encoding="utf-8"))
    by_format, by_partner = defaultdict(float), defaultdict(float)
    rows, files, formats = defaultdict(int), defaultdict(int), {}
    for entry in inside["files"]:
        by_format[entry["format"]] += entry["read_s"]
        by_partner[entry["partner"]] += entry["read_s"]
        rows[entry["partner"]] += entry["rows"]
        files[entry["partner"]] += 1
        formats[entry["partner"]] = entry["format"]
    if not children.keep:
        shutil.rmtree(target, ignore_errors=True)
    return {
        "floor_s": measured.wall_s,
        "cpu_s": measured.cpu_s,
        "tree_cpu_s": measured.tree_cpu_s,
        "ru_maxrss_mib": measured.ru_maxrss_mib,
        "memory": measured.memory,
        "rows": inside["rows"],
        "files": len(inside["files"]),
        "read_s_by_format": dict(by_format),
        "read_s_by_partner": dict(by_partner),
        "rows_by_partner": dict(rows),
        "files_by_partner": dict(files),
        "format_by_partner": formats,
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


def generate_samples(
    landing: Path,
    records: int,
    seed: int,
    partners: list[str] | None = None,
    env: dict | None = None,
) -> None:
    """`ctdc generate` into `landing`: `records` per partner (every sample partner unless
    `partners`). In a child process: the kernel's ru_maxrss of a process counts the memory it
    was forked with, so a benchmark process that held a million generated records itself
    would lend that peak to every child it starts afterwards."""
    command = [sys.executable, "-m", "ctdc_harmonizer.cli", "generate", "--out", str(landing)]
    command += ["--records", str(records), "--seed", str(seed)]
    if partners:
        command += ["--partners", ",".join(partners)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)


def ctdc_run_command(
    landing: Path,
    out: Path,
    release: str,
    partners: list[str] | None = None,
    warehouse: str | None = None,
    mappings: Path | None = None,
) -> list[str]:
    """`ctdc run` as a benchmark starts it: every partner unless `partners`, the repository's
    mappings unless `mappings`, and a SQLite store of its own in `out` unless `warehouse` (a
    benchmark never loads into $CTDC_WAREHOUSE_URL)."""
    command = [sys.executable, "-m", "ctdc_harmonizer.cli", "run"]
    command += ["--landing", str(landing), "--out", str(out), "--release", release]
    if partners:
        command += ["--partners", ",".join(partners)]
    if mappings:
        command += ["--mappings", str(mappings)]
    return command + ["--warehouse", warehouse or f"sqlite:///{out / 'warehouse.sqlite'}"]


def run_ctdc(
    children: Children,
    landing: Path,
    out: Path,
    partners: list[str],
    warehouse: str | None,
    name: str,
) -> dict | None:
    command = ctdc_run_command(landing, out, RELEASE, partners, warehouse)
    measured = measure(
        command, children.env, children.logs, name, children.sampling, children.adopting
    )
    if measured.returncode != 0:
        print(f"bench: ctdc run failed (exit code {measured.returncode}); see {measured.stderr}")
        return None
    release = out / RELEASE
    recon = json.loads((release / "reconciliation.json").read_text(encoding="utf-8"))
    result = {
        "run_s": measured.wall_s,
        "cpu_s": measured.cpu_s,
        "tree_cpu_s": measured.tree_cpu_s,
        "ru_maxrss_mib": measured.ru_maxrss_mib,
        "memory": measured.memory,
        "rows_read": recon["totals"]["rows_read"],
        "rows_harmonized": recon["totals"]["harmonized"],
        "csv_mib": (release / "harmonized.csv").stat().st_size / MIB,
        "parquet_mib": (release / "harmonized.parquet").stat().st_size / MIB,
    }
    if not children.keep:  # a 1M-record release is large; pairs would pile them up
        shutil.rmtree(out, ignore_errors=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records-per-partner", type=int, default=33334)
    parser.add_argument("--partners", default=",".join(samples.available()))
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measure the pair (floor, ctdc run) K times back to back; medians are reported",
    )
    parser.add_argument(
        "--excel-dtypes",
        choices=["string", "infer"],
        default="string",
        help="how the floor reads the workbook: every cell as text, or types inferred from all "
        "rows (both read every cell)",
    )
    parser.add_argument("--warehouse", help="SQLAlchemy URL (default: a SQLite file per run)")
    parser.add_argument(
        "--sample-ms",
        type=float,
        default=50,
        help="interval of the memory sampling of each child's process tree",
    )
    parser.add_argument(
        "--sampler",
        choices=["psutil", "proc"],
        default="psutil" if _psutil_available() else "proc",
        help="read the process tree's memory with psutil (default when installed) or /proc",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders")
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS / "results.jsonl",
        help="the JSON lines file the report is appended to",
    )
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be 1 or more")
    partners = [p for p in args.partners.split(",") if p]
    work = Path(tempfile.mkdtemp(prefix="ctdc-bench-"))
    landing, logs = work / "landing", work / "logs"
    logs.mkdir()
    load_start = os.getloadavg()

    started = time.perf_counter()
    generate_samples(landing, args.records_per_partner, args.seed, partners)
    generated = time.perf_counter() - started

    spec_path = work / "floor.json"
    spec_path.write_text(json.dumps(floor_spec(landing, partners, args.excel_dtypes)))
    # PRIVACY: a run needs the pseudonym key; a benchmark makes a throwaway one, as the demo.
    env = dict(os.environ)
    if not env.get("CTDC_PSEUDONYM_KEY", "").strip():
        env["CTDC_PSEUDONYM_KEY"] = secrets.token_hex(32)
        print("bench: throwaway pseudonym key (CTDC_PSEUDONYM_KEY not set)")
    sampling = {"interval": args.sample_ms / 1000, "use_psutil": args.sampler == "psutil"}
    children = Children(
        env=env, logs=logs, keep=args.keep, sampling=sampling, adopting=adopt_orphans()
    )

    pairs = []
    for k in range(1, args.repeat + 1):
        # The floor right before the run, on the same files (already in the page cache
        # after generation, for both).
        floor = run_floor(children, spec_path, work / f"floor-{k}", f"floor-{k}")
        run = floor and run_ctdc(
            children, landing, work / f"out-{k}", partners, args.warehouse, f"run-{k}"
        )
        if not floor or not run:
            print(f"bench: work folder kept: {work}")
            return 1
        pairs.append({"floor": floor, "run": run, "ratio": run["run_s"] / floor["floor_s"]})

    report = summarize(args, partners, generated, pairs, load_start)
    print_summary(report)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    with args.results.open("a") as handle:
        handle.write(json.dumps(report) + "\n")
    print(f"bench: appended to {args.results}")
    if not args.keep:
        shutil.rmtree(work)
    else:
        print(f"bench: work folder kept: {work}")
    return 0


# The aims of issue 17 (item 6; issue 11 had 3x and 5 s): at 1M records, `ctdc run` within
# 2.5x of the floor and its largest process under 1 GB; at 40k records, under 4 s end to end.
AIM_LARGE_RECORDS, AIM_RATIO, AIM_LARGEST_BYTES = 1_000_000, 2.5, 10**9
AIM_SMALL_RECORDS, AIM_SMALL_S = 40_000, 4.0


def summarize(args, partners: list[str], generated: float, pairs: list[dict], load_start) -> dict:
    """The JSON line: medians over the pairs for times, maxima for memory peaks, every pair."""
    floors, runs = [p["floor"] for p in pairs], [p["run"] for p in pairs]
    run_s = median(r["run_s"] for r in runs)
    floor_s = median(f["floor_s"] for f in floors)
    records = args.records_per_partner * len(partners)
    biggest = max(runs, key=lambda r: r["memory"]["largest_peak_mib"])
    # The aim is judged on the larger of the sampled peak and the kernel's (exact) ru_maxrss.
    largest = max(max(r["memory"]["largest_peak_mib"], r["ru_maxrss_mib"]) for r in runs)
    ratio = median(p["ratio"] for p in pairs)
    aims = {}
    if records == AIM_SMALL_RECORDS:
        aims["run_under_aim_s"] = run_s < AIM_SMALL_S
    if records == AIM_LARGE_RECORDS:
        aims["within_aim_ratio_of_floor"] = ratio <= AIM_RATIO
        aims["largest_process_under_1gb"] = largest * MIB < AIM_LARGEST_BYTES
    report = {
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": _commit(),
        "records_per_partner": args.records_per_partner,
        "partners": partners,
        "records": records,
        "rows_read": runs[0]["rows_read"],
        "rows_harmonized": runs[0]["rows_harmonized"],
        "floor_rows": floors[0]["rows"],
        "generate_s": generated,
        "repeat": len(pairs),
        "floor_s": floor_s,
        "run_s": run_s,
        "ratio": ratio,
        "floor_cpu_s": median(f["cpu_s"] for f in floors),
        "run_cpu_s": median(r["cpu_s"] for r in runs),
        "run_tree_cpu_s": _median_known(r["tree_cpu_s"] for r in runs),
        "rows_per_s": round(runs[0]["rows_read"] / run_s),
        "floor_rows_per_s": round(floors[0]["rows"] / floor_s),
        # As before: ru_maxrss of `ctdc run` (the largest process of its tree, exact).
        "peak_rss_mib": round(max(r["ru_maxrss_mib"] for r in runs)),
        "main_peak_mib": max(r["memory"]["main_peak_mib"] for r in runs),
        "largest_peak_mib": biggest["memory"]["largest_peak_mib"],
        "largest_is_main": biggest["memory"]["largest_is_main"],
        "tree_peak_mib": max(r["memory"]["tree_peak_mib"] for r in runs),
        "floor_by_format_s": _median_of(f["read_s_by_format"] for f in floors),
        "floor_by_partner_s": _median_of(f["read_s_by_partner"] for f in floors),
        "floor_parts_s": _median_of(
            {
                k: f[k]
                for k in ("startup_s", "import_s", "build_s", "write_csv_s", "write_parquet_s")
            }
            for f in floors
        ),
        "aims": aims,
        "pairs": pairs,
        "excel_dtypes": args.excel_dtypes,
        "load_average_start": list(load_start),
        "load_average_end": list(os.getloadavg()),
        "cpus": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
    }
    return _rounded(report)


def print_summary(r: dict) -> None:
    """Counts, sizes and times only."""
    first = r["pairs"][0]
    floor, run = first["floor"], first["run"]
    many = r["repeat"] > 1
    of = f" (median of {r['repeat']} pairs)" if many else ""
    load = " / ".join(f"{x:.2f}" for x in r["load_average_start"])
    print(
        f"\nctdc bench: {len(r['partners'])} partners x {r['records_per_partner']:,} records "
        f"= {r['records']:,}; {r['cpus']} CPUs; load average (1/5/15 min) {load} at start, "
        f"{r['load_average_end'][0]:.2f} at end; commit {r['commit']}"
    )
    print(f"generation: {r['generate_s']:.1f} s (not counted)")

    print(f"\nfloor{of}: fresh python process, readers per format, 27-column result written")
    for partner in r["partners"]:
        files = floor["files_by_partner"][partner]
        print(
            f"  read {partner:<16} {floor['format_by_partner'][partner]:<6} "
            f"{files} file{'s' if files > 1 else ' '} {floor['rows_by_partner'][partner]:>10,} rows"
            f"  {r['floor_by_partner_s'][partner]:7.2f} s"
        )
    formats = ", ".join(f"{k} {v:.2f} s" for k, v in r["floor_by_format_s"].items())
    parts = r["floor_parts_s"]
    print(f"  read by format: {formats}")
    print(
        f"  write 27 columns x {r['floor_rows']:,} rows: csv {parts['write_csv_s']:.2f} s "
        f"({floor['csv_mib']:.1f} MiB), parquet {parts['write_parquet_s']:.2f} s "
        f"({floor['parquet_mib']:.1f} MiB)"
    )
    print(f"  interpreter start-up {parts['startup_s']:.2f} s, imports {parts['import_s']:.2f} s")
    print(
        f"  floor total: {r['floor_s']:.2f} s wall ({r['floor_rows_per_s']:,} rows/s); "
        f"{r['floor_cpu_s']:.2f} s CPU"
    )

    print(f"\nctdc run{of}:")
    print(
        f"  {r['run_s']:.2f} s wall ({r['rows_per_s']:,} rows/s); "
        f"{r['rows_read']:,} rows read (floor: {r['floor_rows']:,}), "
        f"{r['rows_harmonized']:,} harmonized"
    )
    tree = r["run_tree_cpu_s"]
    if tree is None:
        print(f"  CPU: {r['run_cpu_s']:.2f} s (main process and what it waited for)")
    else:
        # On n cores a run of this much CPU cannot take less than tree / n seconds.
        print(
            f"  CPU: {tree:.2f} s over the whole process tree ({tree / r['run_s']:.2f} of "
            f"{r['cpus']} cores busy on average; at least {tree / r['cpus']:.2f} s of wall "
            f"on {r['cpus']} cores); {r['run_cpu_s']:.2f} s in the main process and what it "
            "waited for"
        )
    print(
        f"  release written: harmonized.csv {run['csv_mib']:.1f} MiB, "
        f"harmonized.parquet {run['parquet_mib']:.1f} MiB"
    )

    if many:
        print("\n  pair   floor s    run s   ratio")
        for k, pair in enumerate(r["pairs"], start=1):
            print(
                f"  {k:>4} {pair['floor']['floor_s']:9.2f} {pair['run']['run_s']:8.2f} "
                f"{pair['ratio']:6.1f}x"
            )
    print(f"\nratio run / floor: {r['ratio']:.1f}x{' (median of the pairs)' if many else ''}")

    rm, fm = run["memory"], floor["memory"]
    where = "main" if r["largest_is_main"] else "a worker"
    floor_main = max(p["floor"]["memory"]["main_peak_mib"] for p in r["pairs"])
    floor_ru = max(p["floor"]["ru_maxrss_mib"] for p in r["pairs"])
    print(f"\npeak RSS in MiB{' (largest over the pairs)' if many else ''}")
    print(f"  {'':<36} {'ctdc run':>8} {'floor':>8}")
    rows = [
        ("main process", r["main_peak_mib"], floor_main),
        (f"largest single process ({where})", r["largest_peak_mib"], floor_main),
        ("sum over the process tree", r["tree_peak_mib"], floor_main),
        ("ru_maxrss (kernel: largest, exact)", r["peak_rss_mib"], floor_ru),
    ]
    for label, a, b in rows:
        print(f"  {label:<36} {a:8,.0f} {b:8,.0f}")
    workers = ", ".join(f"{x:,.0f}" for x in rm["descendant_peaks_mib"]) or "none"
    seen, most = rm["processes_seen"], rm["most_processes_at_once"]
    print(
        f"  {'pair 1: ' if many else ''}{seen} processes seen (at most {most} at once); "
        f"descendants' peaks {workers}"
    )
    print(
        f"  sampled every {rm['interval_ms']} ms with {rm['sampler']}: {rm['samples']} samples "
        f"of ctdc run (sampling cost {rm['sampler_cpu_s']:.2f} s CPU in the benchmark's "
        f"process), {fm['samples']} of the floor"
    )

    print("\naims")
    small, large = r["records"] == AIM_SMALL_RECORDS, r["records"] == AIM_LARGE_RECORDS
    met = {True: "met", False: "NOT met"}
    if small:
        print(f"  {AIM_SMALL_RECORDS:,} records, ctdc run under {AIM_SMALL_S:.0f} s: ", end="")
        print(f"{met[r['aims']['run_under_aim_s']]} ({r['run_s']:.2f} s)")
    else:
        print(f"  {AIM_SMALL_RECORDS:,} records, ctdc run under {AIM_SMALL_S:.0f} s: not this size")
    if large:
        largest = max(r["largest_peak_mib"], r["peak_rss_mib"])  # sampled, or the kernel's
        print(
            f"  {AIM_LARGE_RECORDS:,} records, within {AIM_RATIO:g}x of the floor: "
            f"{met[r['aims']['within_aim_ratio_of_floor']]} ({r['ratio']:.1f}x)"
        )
        print(
            f"  {AIM_LARGE_RECORDS:,} records, largest process under 1 GB "
            f"({AIM_LARGEST_BYTES / MIB:.0f} MiB): "
            f"{met[r['aims']['largest_process_under_1gb']]} ({largest:,.0f} MiB)"
        )
    else:
        print(
            f"  {AIM_LARGE_RECORDS:,} records, within {AIM_RATIO:g}x of the floor and largest "
            "process under 1 GB: not this size"
        )


def _median_known(values) -> float | None:
    """The median of the values, or None when any is not known."""
    values = list(values)
    return None if any(v is None for v in values) else median(values)


def _median_of(dicts) -> dict:
    """Key by key median of dicts holding the same keys."""
    dicts = list(dicts)
    return {k: median(d[k] for d in dicts) for k in dicts[0]}


def _commit() -> str:
    try:
        described = subprocess.run(
            ["git", "-C", str(HERE), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return described.stdout.strip() or "unknown"


def _rounded(values):
    if isinstance(values, dict):
        return {k: _rounded(v) for k, v in values.items()}
    if isinstance(values, list):
        return [_rounded(v) for v in values]
    if isinstance(values, float):
        return round(values, 3)
    return values


if __name__ == "__main__":
    sys.exit(main())
