"""Benchmark: `ctdc run` at two commits, back to back on the same files, at several sizes.

    python benchmarks/compare_commits.py --before 702b91b
    python benchmarks/compare_commits.py --before 702b91b --after HEAD \\
        --records-per-partner 2500,10000,50000,250000 --pairs 5
    python benchmarks/compare_commits.py --before d7c87eb --partners iom \\
        --records-per-partner 3000,10000 --pairs 3

Issue 17 asks for a faster pipeline and for nothing slower than before "at any size". A
machine's speed drifts from one minute to the next (by up to 30% on the shared two-core
machines this was written on), so figures taken on different days, or one series after the
other, cannot show that. This benchmark runs the two commits in alternation, on the same
files, and reports them side by side.

- `--before REV` is checked out in a git worktree (detached, in a temporary folder), and so is
  `--after REV` when given; without it, "after" is this checkout as it is (uncommitted changes
  included). Each is run by this venv's Python, with the worktree's `plugins/` first on
  PYTHONPATH: its own code, mappings and schemas, this venv's libraries. A commit that needs
  other libraries than this venv holds cannot be compared this way (its run fails, and the
  benchmark says so).
- For each size (records per partner; every sample partner, or those `--partners` names),
  the files are generated once, by this checkout's generator, and both commits read them.
- Each pair runs both commits, one right after the other; the order alternates from one pair
  to the next, so that neither commit always runs second on a warmer page cache.
- Each run gets a new output folder and a new SQLite store (a first release).
- Reports, per size: the median wall time of each commit and the range, the median of the
  pairs' ratios after / before, and the CPU time of each run's whole process tree (see
  bench_cli.adopt_orphans). Appends a JSON line to benchmarks/out/compare.jsonl (or
  --results). Prints only counts and times, never a data value; the runs' output goes to
  log files in the work folder, which is kept when a run fails (or with --keep).
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
from dataclasses import dataclass
from pathlib import Path
from statistics import median

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "out"
sys.path.insert(0, str(HERE))

import bench_cli  # noqa: E402  (beside this file, not a package)

RELEASE = "compare-2025"


@dataclass
class Side:
    """One of the two commits: its name in the report and the plugins folder it runs from."""

    label: str
    revision: str  # as given, or "checkout"
    commit: str  # resolved
    plugins: Path


def _git(*args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise SystemExit(f"compare: git {' '.join(args[:2])} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def _checked_out(label: str, revision: str, folder: Path) -> Side:
    commit = _git("rev-parse", "--verify", f"{revision}^{{commit}}")
    _git("worktree", "add", "--detach", "--quiet", str(folder), commit)
    return Side(label, revision, commit, folder / "plugins")


def _this_checkout(label: str) -> Side:
    commit = _git("describe", "--always", "--dirty")
    return Side(label, "checkout", commit, REPO / "plugins")


def _run(
    side: Side,
    landing: Path,
    out: Path,
    logs: Path,
    name: str,
    env: dict,
    adopting: bool,
    partners: list[str] | None = None,
):
    command = bench_cli.ctdc_run_command(landing, out, RELEASE, partners)
    child_env = {**env, "PYTHONPATH": str(side.plugins)}
    # Memory is not compared here (bench_cli.py reports it): one sample a second keeps the
    # sampler's own CPU, which competes with the runs for the cores, near nothing.
    sampling = {"interval": 1.0, "use_psutil": bench_cli._psutil_available()}
    measured = bench_cli.measure(command, child_env, logs, name, sampling, adopting)
    shutil.rmtree(out, ignore_errors=True)
    return measured


def _summary(records: int, partners: int, pairs: list[dict]) -> dict:
    def of(side: str, field: str) -> list[float]:
        return [p[side][field] for p in pairs if p[side][field] is not None]

    return {
        "records_per_partner": records,
        "records": records * partners,
        "pairs": len(pairs),
        "before_s": of("before", "wall_s"),
        "after_s": of("after", "wall_s"),
        "before_cpu_s": of("before", "tree_cpu_s"),
        "after_cpu_s": of("after", "tree_cpu_s"),
        "ratio": median(p["after"]["wall_s"] / p["before"]["wall_s"] for p in pairs),
    }


def _print_summary(before: Side, after: Side, sizes: list[dict]) -> None:
    print(f"\nbefore: {before.revision} ({before.commit[:12]})")
    print(f"after: {after.revision} ({after.commit[:12]})")
    print(
        f"{'records':>10} {'pairs':>5} {'before s':>9} {'range':>13} {'after s':>9} {'range':>13} "
        f"{'after/before':>12} {'CPU before':>10} {'CPU after':>9}"
    )
    for s in sizes:

        def cpu(values: list[float]) -> str:
            return f"{median(values):.2f}" if values else "-"

        print(
            f"{s['records']:>10,} {s['pairs']:>5} {median(s['before_s']):>9.2f} "
            f"{min(s['before_s']):>6.2f}-{max(s['before_s']):<6.2f} {median(s['after_s']):>9.2f} "
            f"{min(s['after_s']):>6.2f}-{max(s['after_s']):<6.2f} {s['ratio']:>12.2f} "
            f"{cpu(s['before_cpu_s']):>10} {cpu(s['after_cpu_s']):>9}"
        )
    print("(wall and CPU: medians over the pairs, in seconds; CPU over each run's process tree)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="the commit to compare against")
    parser.add_argument("--after", help="the commit compared (default: this checkout as it is)")
    parser.add_argument(
        "--records-per-partner",
        default="2500,10000,50000",
        help="comma-separated sizes: records per sample partner (default 2500,10000,50000)",
    )
    parser.add_argument("--pairs", type=int, default=5, help="pairs of runs per size (default 5)")
    parser.add_argument(
        "--partners", help="comma-separated sample partners to run (default: every one)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS / "compare.jsonl",
        help="the JSON lines file the summary is appended to",
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.records_per_partner.split(",") if s.strip()]
    if args.pairs < 1 or not sizes or min(sizes) < 1:
        parser.error("--pairs and every size must be 1 or more")

    from ctdc_harmonizer import samples  # this checkout's, as the generator

    chosen = [p.strip() for p in (args.partners or "").split(",") if p.strip()] or None
    unknown = sorted(set(chosen or []) - set(samples.available()))
    if unknown:
        parser.error(f"--partners: no sample partner named {', '.join(unknown)}")
    partners = len(chosen or samples.available())
    work = Path(tempfile.mkdtemp(prefix="ctdc-compare-"))
    logs = work / "logs"
    logs.mkdir()
    env = dict(os.environ)
    # PRIVACY: a run needs the pseudonym key; a benchmark makes a throwaway one, as the demo.
    if not env.get("CTDC_PSEUDONYM_KEY", "").strip():
        env["CTDC_PSEUDONYM_KEY"] = secrets.token_hex(32)
    adopting = bench_cli.adopt_orphans()
    trees: list[Path] = []
    failed = False
    results = []
    try:
        before = _checked_out("before", args.before, work / "before")
        trees.append(work / "before")
        if args.after:
            after = _checked_out("after", args.after, work / "after")
            trees.append(work / "after")
        else:
            after = _this_checkout("after")
        for records in sizes:
            landing = work / f"landing-{records}"
            started = time.perf_counter()
            # This checkout's generator, for both commits.
            checkout = {**os.environ, "PYTHONPATH": str(REPO / "plugins")}
            bench_cli.generate_samples(landing, records, args.seed, chosen, env=checkout)
            print(
                f"compare: {records:,} records per partner generated in "
                f"{time.perf_counter() - started:.1f} s"
            )
            pairs = []
            for k in range(1, args.pairs + 1):
                order = (before, after) if k % 2 else (after, before)
                pair = {}
                for side in order:
                    name = f"{records}-{k}-{side.label}"
                    measured = _run(side, landing, work / name, logs, name, env, adopting, chosen)
                    if measured.returncode != 0:
                        print(
                            f"compare: {side.label} ({side.revision}) failed with exit code "
                            f"{measured.returncode}; see {measured.stderr}"
                        )
                        failed = True
                        return 1
                    pair[side.label] = {
                        "wall_s": measured.wall_s,
                        "tree_cpu_s": measured.tree_cpu_s,
                    }
                print(
                    f"  pair {k}: before {pair['before']['wall_s']:.2f} s, "
                    f"after {pair['after']['wall_s']:.2f} s"
                )
                pairs.append(pair)
            shutil.rmtree(landing)
            results.append(_summary(records, partners, pairs))
        _print_summary(before, after, results)
        args.results.parent.mkdir(parents=True, exist_ok=True)
        line = {
            "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "before": before.commit,
            "after": after.commit,
            "partners": chosen or "all",
            "sizes": bench_cli._rounded(results),
        }
        with args.results.open("a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
        print(f"compare: appended to {args.results}")
        return 0
    finally:
        for tree in trees:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                capture_output=True,
                timeout=120,
            )
        if failed or args.keep:
            print(f"compare: work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
