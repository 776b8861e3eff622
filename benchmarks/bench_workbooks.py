"""Benchmark: what reading a workbook as a person sees it costs, and how fast a bomb is refused.

    python benchmarks/bench_workbooks.py --records 250000
    python benchmarks/bench_workbooks.py --records 10000 --bomb-mb 1100

Two measurements, each in a fresh child process (time, and its peak RSS: VmHWM):

1. **decompression limit**: a workbook a few MB on disk whose sheet XML unpacks to
   `--bomb-mb` MB (1,100 by default, issue 15's case) goes through `read_extract`; time and
   peak memory until it is refused (schemas/reader_limits_v1.yaml);
2. **the XML scan's overhead**: the HTCDS sample workbook of `--records` records read by
   `read_extract` with the scan (ingest/workbook.py: formulas without result, error cells,
   merges, where values start), then with the scan replaced by a no-op (the reader before
   issue 15), then the scan alone. The sample holds no formula, as most deliveries do not:
   the fast path (byte searches) is what is measured.

Prints counts, sizes and times only, never a data value.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

CHILD = r"""
import json, sys, time
from pathlib import Path
from ctdc_harmonizer.errors import ExtractError
from ctdc_harmonizer.ingest import excel, workbook
from ctdc_harmonizer.ingest.extract import read_extract
from ctdc_harmonizer.mapping.partner import load_partner

mode, path = sys.argv[1], Path(sys.argv[2])
config = load_partner(Path(sys.argv[3]) / "mappings" / "case_management")
if mode == "no-scan":  # the reader before issue 15: no XML scan, values start at row 1
    excel.workbook.scan_sheet = lambda *a, **k: workbook.SheetScan(first_row=1)
started = time.perf_counter()
outcome = "read"
if mode == "scan-only":
    import zipfile
    with zipfile.ZipFile(path) as archive:
        part = workbook.xlsx_sheets(archive)[0].part
        workbook.scan_sheet("case_management", path.name, archive, part, None)
else:
    try:
        rows = len(read_extract(config, path).frame)
        outcome = f"read {rows} rows"
    except ExtractError as exc:
        outcome = "refused: " + exc.problem
seconds = time.perf_counter() - started
# VmHWM: this process's own peak (ru_maxrss would carry the parent's over exec).
status = Path("/proc/self/status").read_text().splitlines()
peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) // 1024
print(json.dumps({"mode": mode, "seconds": round(seconds, 3), "peak_mb": peak, "outcome": outcome}))
"""


def child(mode: str, path: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(path), str(REPO)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def bomb(folder: Path, unpacked_mb: int) -> Path:
    """A real sample workbook whose sheet XML is padded with one repeated empty row."""
    from ctdc_harmonizer.samples import case_management

    (source,) = [p for p in case_management.generate(folder / "src", 20, 1) if p.suffix == ".xlsx"]
    path = folder / "bomb.xlsx"
    row = b'<row r="9"><c r="B9" t="inlineStr"><is><t>x</t></is></c></row>'
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as new:
        for item in old.infolist():
            data = old.read(item.filename)
            if item.filename != "xl/worksheets/sheet1.xml":
                new.writestr(item, data)
                continue
            head, tail = data.split(b"</sheetData>")
            with new.open(item.filename, "w", force_zip64=True) as out:
                out.write(head)
                block = row * (1 << 14)
                for _ in range((unpacked_mb << 20) // len(block)):  # blocks, not records
                    out.write(block)
                out.write(b"</sheetData>" + tail)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=250_000)
    parser.add_argument("--bomb-mb", type=int, default=1100)
    parser.add_argument(
        "--workdir", type=Path, help="keep the files here and reuse a sample made before"
    )
    args = parser.parse_args()
    from ctdc_harmonizer.samples import case_management

    with tempfile.TemporaryDirectory(prefix="bench-workbooks-") as tmp:
        folder = args.workdir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        path = bomb(folder, args.bomb_mb)
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(i.file_size for i in archive.infolist())
        print(
            f"bomb: {path.stat().st_size / 1e6:.1f} MB on disk, {unpacked >> 20} MB unpacked "
            f"(made in {time.perf_counter() - started:.0f} s)"
        )
        print("  refused:", child("scan", path))

        started = time.perf_counter()
        sample = folder / f"sample-{args.records}.xlsx"
        if not sample.exists():
            (made,) = [
                p
                for p in case_management.generate(folder / "landing", args.records, 2025)
                if p.suffix == ".xlsx"
            ]
            made.rename(sample)
        with zipfile.ZipFile(sample) as archive:
            unpacked = sum(i.file_size for i in archive.infolist())
        print(
            f"sample: {args.records} records, {sample.stat().st_size / 1e6:.1f} MB on disk, "
            f"{unpacked >> 20} MB unpacked (made in {time.perf_counter() - started:.0f} s)"
        )
        for mode in ("scan", "no-scan", "scan", "no-scan", "scan-only"):
            print(" ", child(mode, sample))


if __name__ == "__main__":
    main()
