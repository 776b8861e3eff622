"""Benchmark the synthesis at several release sizes: fit, sampling (both samplers), whole run.

    python benchmarks/bench_synthesis.py --sizes 20000,65000,260000
    python benchmarks/bench_synthesis.py --sizes 260000 --pacsynth-up-to 300000   # hours

Run it under the machine's heavy lock (flock /tmp/ctdc-heavy.lock ...). For each size, a
release is made once as a user makes one (`ctdc generate` with size / 4 records per partner,
seed 11, then `ctdc run`; cached in benchmarks/out/releases/), then, in a fresh child process
per size, every synthesis step runs in a row as the DAG runs them, with a fresh fit. Reported
per size: seconds of pac-synth's fit, of the project's sampler, of pac-synth's sampler (only
up to --pacsynth-up-to rows: it runs right after the fit and takes minutes), of the evaluation
and of all steps; the peak resident memory of each step and the largest of them (VmHWM,
reset before each step: StepMemory); and the comparability table per combination length for
each sampler that ran (fabricated combinations, mean absolute error against the DP
aggregates and the sensitive counts). One JSON line per size is appended to
benchmarks/out/synthesis.jsonl. Not a timed test: run it by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"


def label(rows: int) -> str:
    return f"bench{rows // 1000}k-2025"  # no digits a year could be read from


def make_release(rows: int, seed: int, out: Path = OUT) -> Path:
    """A harmonized release of about `rows` rows (cached under `out`), made with the command
    line."""
    root = out / "releases" / f"n{rows}"
    if (root / "handoff" / label(rows) / "manifest.json").is_file():
        return root
    env = {**os.environ}
    env.setdefault("CTDC_PSEUDONYM_KEY", secrets.token_hex(32))
    ctdc = [sys.executable, "-m", "ctdc_harmonizer.cli"]
    per_partner = str(rows // 4 + 1)
    landing = root / "landing"
    for command in (
        ["generate", "--out", str(landing), "--records", per_partner, "--seed", str(seed)],
        ["run", "--landing", str(landing), "--out", str(root), "--release", label(rows)],
    ):
        subprocess.run([*ctdc, *command], check=True, env=env, capture_output=True)
    return root


def table(report: dict) -> dict:
    lengths = [str(k) for k in range(1, report["reporting_length"] + 1)]
    out = {}
    for name, entry in report["samplers"].items():
        dp, sens = entry["vs_dp_aggregates"], entry["vs_sensitive"]
        out[name] = {
            "fabricated": [sens[k]["only_in_synthetic"] for k in lengths],
            "mae_vs_dp": [dp[k]["mean_absolute_error"] for k in lengths],
            "mae_vs_sensitive": [sens[k]["mean_absolute_error"] for k in lengths],
            "rows": report["rows"][name],
        }
    return out


class StepMemory:
    """Peak resident memory of each step: the kernel's high-water mark of this process
    (VmHWM), reset before each step (writing 5 to /proc/self/clear_refs).

    Exact, and it sees pac-synth's Rust allocations (tracemalloc does not) while the fit
    holds the GIL (a sampling thread would not run then).
    """

    def __init__(self) -> None:
        self.peaks: dict[str, float] = {}

    @staticmethod
    def _status(field: str) -> float:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError(f"no {field} in /proc/self/status")

    def reset(self) -> None:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")

    def record(self, step: str) -> None:
        self.peaks[step] = round(self._status("VmHWM"), 1)


def child(
    release_root: Path,
    root: Path,
    rows: int,
    pacsynth_up_to: int,
    threads: int,
    reuse_fit: bool,
    engine: str,
) -> dict:
    """All synthesis steps in a row, timed (runs in a fresh process per size).

    The hand-off is read from `release_root`; the synthesis writes under `root` (its own
    restricted and public folders and a throw-away ledger). With `reuse_fit`, the aggregates
    (and pac-synth's sample) fitted by an earlier run in `root` are reused: no new fit.
    """
    import shutil

    import yaml

    from ctdc_harmonizer.paths import schemas_dir
    from ctdc_harmonizer.pipeline import local
    from ctdc_harmonizer.pipeline.synthesis import COMPARABILITY, SYNTHESIS
    from ctdc_harmonizer.synthesis.plan import plan_synthesis

    release = label(rows)
    root.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(root / "public" / release, ignore_errors=True)
    if not reuse_fit:  # a fresh fit each time
        shutil.rmtree(root / "restricted" / release, ignore_errors=True)
        (root / "bench-ledger.sqlite").unlink(missing_ok=True)
    config = yaml.safe_load((schemas_dir() / "synthesis_v1.yaml").read_text("utf-8"))
    config["sampling"]["threads"] = threads
    config["sampling"]["compare_with_pacsynth_up_to_rows"] = pacsynth_up_to
    config.setdefault("aggregation", {})["engine"] = engine
    config["budget"]["lifetime_epsilon"] = 1000.0  # a benchmark spends its own budget
    # its own throw-away ledger, not the run's store: the people of the fit are not accounted
    config["per_person"]["release_not_in_store"] = "fit_unaccounted"
    config_path = root / "bench-synthesis.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    plan = plan_synthesis(
        release=release,
        handoff=str(release_root / "handoff" / release),
        out=str(root),
        config_path=str(config_path),
        warehouse_url=f"sqlite:///{root}/bench-ledger.sqlite",
    )
    timings, done = {}, {SYNTHESIS.plan_step.name: plan}
    memory = StepMemory()
    started = time.perf_counter()
    for step in SYNTHESIS.release_steps:  # the declared steps, each timed
        memory.reset()
        t0 = time.perf_counter()
        done[step.name] = local.call_step(SYNTHESIS, step, plan, done)
        timings[step.name] = round(time.perf_counter() - t0, 2)
        memory.record(step.name)
    total = round(time.perf_counter() - started, 2)
    peaks = memory.peaks
    peak = max(peaks.values())  # ru_maxrss is reset with VmHWM: the largest step's peak
    results = {name: r.model_dump() for name, r in done.items() if name != "plan_synthesis"}
    fitted = results["fit_aggregates"]
    report = json.loads(
        (Path(results["evaluate"]["report"]).with_name(COMPARABILITY)).read_text("utf-8")
    )
    return {
        "rows": results["verify_handoff"]["rows"],
        "seconds_total": total,
        "seconds_by_step": timings,
        "seconds_fit": fitted["fit_seconds"],
        "seconds_pacsynth_sampler": fitted["pacsynth_sample_seconds"],
        "seconds_own_sampler": results["sample"]["sample_seconds"],
        "threads": threads,
        "engine": engine,
        "reused_fit": fitted["reused"],
        "work": str(root),
        "combinations": fitted["combinations"],
        "peak_rss_mib": round(peak, 1),
        "peak_rss_mib_by_step": peaks,
        "comparability": table(report),
    }


def run_child(command: list[str], stream: bool) -> tuple[int, str, str]:
    """Run a child; its last stdout line is its result. With `stream`, every other stdout
    line (pac-synth's log goes to stdout) is passed on to stderr as it comes."""
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=None if stream else subprocess.PIPE, text=True
    ) as process:
        last = ""
        for line in process.stdout:
            if last and stream:
                print(last, end="", file=sys.stderr, flush=True)
            last = line
        errors = process.stderr.read() if process.stderr else ""
    return process.returncode, last, errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20000,65000,260000")
    parser.add_argument("--pacsynth-up-to", type=int, default=70000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--engine",
        choices=["own", "pacsynth"],
        default="own",
        help="which code computes the DP aggregates (aggregation.engine); pac-synth's sampler "
        "and the side-by-side comparison need 'pacsynth'",
    )
    parser.add_argument(
        "--work",
        help="synthesize into benchmarks/out/runs/WORK/n<rows>/ instead of the release's own "
        "folder (several runs side by side, e.g. a long pac-synth sampler run and the timed one)",
    )
    parser.add_argument(
        "--reuse-fit",
        action="store_true",
        help="reuse the aggregates (and pac-synth's sample) an earlier run stored in the same "
        "folder: the sampler and the evaluation again, no new fit",
    )
    parser.add_argument(
        "--pacsynth-progress",
        action="store_true",
        help="pac-synth's own progress log (its debug level; pac-synth writes it to stdout) "
        "passed on to stderr as it goes: how far a long run of its sampler got (generated "
        "benchmark data only)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=OUT,
        help="folder of the cached releases, the runs and synthesis.jsonl (default: "
        "benchmarks/out)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        job = json.loads(args.child)
        if args.pacsynth_progress:
            import pacsynth

            pacsynth.init_logger("debug")
        result = child(
            Path(job["release_root"]),
            Path(job["root"]),
            job["rows"],
            args.pacsynth_up_to,
            args.threads,
            args.reuse_fit,
            args.engine,
        )
        print(json.dumps(result))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for rows in [int(s) for s in args.sizes.split(",") if s]:
        t0 = time.perf_counter()
        root = make_release(rows, args.seed, args.out)
        made = round(time.perf_counter() - t0, 1)
        work = args.out / "runs" / args.work / f"n{rows}" if args.work else root
        job = {"release_root": str(root), "root": str(work), "rows": rows}
        command = [sys.executable, __file__, "--child", json.dumps(job)]
        command += ["--pacsynth-up-to", str(args.pacsynth_up_to), "--threads", str(args.threads)]
        command += ["--engine", args.engine]
        command += ["--reuse-fit"] if args.reuse_fit else []
        command += ["--pacsynth-progress"] if args.pacsynth_progress else []
        returncode, last, errors = run_child(command, args.pacsynth_progress)
        if returncode != 0:
            print(errors[-3000:], file=sys.stderr)
            return 1
        result = json.loads(last)
        result["seconds_making_release"] = made
        result["load_average"] = os.getloadavg()
        print(json.dumps(result, indent=2))
        with open(args.out / "synthesis.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
