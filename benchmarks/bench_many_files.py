"""Benchmark: the same records delivered as one file and as many small files (issue 15).

    python benchmarks/bench_many_files.py                      # 3,000 records, 2,000 files
    python benchmarks/bench_many_files.py --records 3000 --files 2000 --formats csv,jsonl

Per format (CSV: `iom`, JSON lines: `hotline`, Excel workbook: `case_management`), generates
N sample records (the partner's sample generator, seeded), writes them once as one file and
once split into K files of the partner's format (each with its header; generation is timed
apart and not counted), then runs `ctdc run --partners <partner>` on each landing in a fresh
child process, one right after the other (started and measured as bench_cli.py does), and
prints the wall times and the ratio many / one (the aim: at most 2), and the same for the CPU
seconds of each run's whole process tree (its workers included). Prints counts and times
only, never a value; the children's output goes to log files in the work folder, kept when a
child fails. Appends a JSON line to benchmarks/out/many_files.jsonl (git-ignored; or
--results). Run it under the machine's lock (`flock /tmp/ctdc-heavy.lock ...`).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

from ctdc_harmonizer import samples

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cli import (  # noqa: E402  (beside this file, not a package)
    Children,
    _psutil_available,
    adopt_orphans,
    ctdc_run_command,
    measure,
)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "out"
RELEASE = "bench-2025"
PARTNERS = {"csv": "iom", "jsonl": "hotline", "xlsx": "case_management"}
HTCDS_HEADER_ROWS = 2  # field names, then labels (mappings/case_management/partner.yaml)


def _extract(folder: Path) -> Path:
    """The sample's one extract (the withdrawals list is left out of both landings)."""
    (found,) = [p for p in folder.iterdir() if p.name.casefold() != "withdrawals.csv"]
    return found


def _slices(n: int, k: int) -> list[tuple[int, int]]:
    """k contiguous, near-equal slices of n records (no empty one)."""
    k = min(k, n)
    return [(i * n // k, (i + 1) * n // k) for i in range(k)]


def split_csv(source: Path, target: Path, k: int) -> int:
    with source.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))  # records, not lines: notes may hold line breaks
    header, body = rows[0], rows[1:]
    for i, (a, b) in enumerate(_slices(len(body), k)):
        path = target / f"{source.stem}_{i:05d}{source.suffix}"
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(body[a:b])
    return len(body)


def split_jsonl(source: Path, target: Path, k: int) -> int:
    lines = [x for x in source.read_bytes().splitlines(keepends=True) if x.strip()]
    for i, (a, b) in enumerate(_slices(len(lines), k)):
        (target / f"{source.stem}_{i:05d}{source.suffix}").write_bytes(b"".join(lines[a:b]))
    return len(lines)


def split_xlsx(source: Path, target: Path, k: int) -> int:
    import openpyxl

    book = openpyxl.load_workbook(source, read_only=True)
    rows = list(book.worksheets[0].iter_rows(values_only=True))
    book.close()
    head, body = rows[:HTCDS_HEADER_ROWS], rows[HTCDS_HEADER_ROWS:]
    for i, (a, b) in enumerate(_slices(len(body), k)):
        out = openpyxl.Workbook()
        sheet = out.active
        for values in [*head, *body[a:b]]:
            sheet.append(list(values))
        out.save(target / f"{source.stem}_{i:05d}{source.suffix}")
    return len(body)


SPLIT = {"csv": split_csv, "jsonl": split_jsonl, "xlsx": split_xlsx}


def prepare(fmt: str, records: int, files: int, work: Path, seed: int) -> dict:
    partner = PARTNERS[fmt]
    started = time.perf_counter()
    one, many = work / fmt / "one", work / fmt / "many"
    samples.generate(partner, one, records, seed)
    (one / partner / "withdrawals.csv").unlink(missing_ok=True)
    (many / partner).mkdir(parents=True)
    count = SPLIT[fmt](_extract(one / partner), many / partner, files)
    return {
        "partner": partner,
        "records": count,
        "files": len(list((many / partner).iterdir())),
        "one": one,
        "many": many,
        "generated_s": round(time.perf_counter() - started, 2),
    }


def run(
    children: Children, landing: Path, out: Path, partner: str, name: str
) -> tuple[float, float | None] | None:
    """`ctdc run --partners <partner>` on `landing` in a child, as bench_cli runs it: its wall
    time and its whole process tree's CPU (None when the tree's CPU is not known: see
    bench_cli.adopt_orphans); None when it failed (its log is kept)."""
    command = ctdc_run_command(landing, out, RELEASE, [partner])
    measured = measure(
        command, children.env, children.logs, name, children.sampling, children.adopting
    )
    if measured.returncode != 0:
        print(f"bench: {name} failed (exit code {measured.returncode}); see {measured.stderr}")
        return None
    return measured.wall_s, measured.tree_cpu_s


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _ratio(many: float | None, one: float | None) -> float | None:
    return None if many is None or not one else round(many / one, 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--formats", default="csv,jsonl,xlsx")
    parser.add_argument("--seed", type=int, default=2025)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS / "many_files.jsonl",
        help="the JSON lines file the report is appended to",
    )
    args = parser.parse_args(argv)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    env = dict(os.environ)
    if not env.get("CTDC_PSEUDONYM_KEY", "").strip():
        env["CTDC_PSEUDONYM_KEY"] = secrets.token_hex(32)  # a throwaway key, as the demo's
    work = Path(tempfile.mkdtemp(prefix="bench-many-files-"))
    # Memory is not reported here: one sample a second keeps the sampler's CPU near nothing.
    sampling = {"interval": 1.0, "use_psutil": _psutil_available()}
    children = Children(
        env=env, logs=work, keep=args.keep, sampling=sampling, adopting=adopt_orphans()
    )
    report = {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "records": args.records,
        "files": args.files,
        "load": os.getloadavg(),
        "formats": {},
    }
    failed = False
    for fmt in formats:
        case = prepare(fmt, args.records, args.files, work, args.seed)
        times = {}
        for shape in ("one", "many"):
            out = work / fmt / f"out-{shape}"
            name = f"{fmt}-{shape}"
            times[shape] = run(children, case[shape], out, case["partner"], name)
        ok = None not in times.values()
        failed |= not ok
        wall = {shape: t[0] if t else None for shape, t in times.items()}
        cpu = {shape: t[1] if t else None for shape, t in times.items()}
        entry = {
            "partner": case["partner"],
            "records": case["records"],
            "files": case["files"],
            "generated_s": case["generated_s"],
            "one_s": _rounded(wall["one"]),
            "many_s": _rounded(wall["many"]),
            "ratio": _ratio(wall["many"], wall["one"]),
            # CPU seconds (user + system) of each run's whole process tree, its workers
            # included: steadier than wall time on a shared machine.
            "one_cpu_s": _rounded(cpu["one"]),
            "many_cpu_s": _rounded(cpu["many"]),
            "cpu_ratio": _ratio(cpu["many"], cpu["one"]),
        }
        report["formats"][fmt] = entry
        print(
            f"{fmt:5s} {entry['partner']:15s} {entry['records']} records: one file "
            f"{entry['one_s']} s, {entry['files']} files {entry['many_s']} s, "
            f"ratio {entry['ratio']}; CPU {entry['one_cpu_s']} s / {entry['many_cpu_s']} s, "
            f"ratio {entry['cpu_ratio']}; load {os.getloadavg()[0]:.1f}"
        )
    args.results.parent.mkdir(parents=True, exist_ok=True)
    with args.results.open("a") as handle:
        handle.write(json.dumps(report) + "\n")
    if failed or args.keep:
        print(f"bench: work folder kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
