"""Benchmark the public explorer page: its size and how long Chromium takes to open it.

    python benchmarks/bench_explorer.py --rows 260000
    python benchmarks/bench_explorer.py --public-dir <out>/public/<release>

With --public-dir, the page of that published release is measured as it is. Otherwise a
release-shaped public folder of --rows synthetic records is made (skewed categories, correlated
binaries; the aggregates are the exact counts of every combination up to length 3 of those
records, which is more combinations than a DP fit releases, so the page is no smaller than a real
one) and its page rendered. Reported: rows, combinations, page MB, seconds to render the page,
and the seconds from navigation to the page's ready mark (data decoded, selectors and charts
drawn), best and median of --repeat openings in Debian's Chromium (/usr/bin/chromium), plus the
seconds one selection of three values takes. One JSON line is appended to
benchmarks/out/explorer.jsonl. Not a timed test: run it by hand (under the heavy lock).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))
OUT = Path(__file__).resolve().parent / "out"
CHROMIUM = "/usr/bin/chromium"


def synthetic_release(rows: int, folder: Path, seed: int = 19) -> Path:
    """A public folder (synthetic.csv, aggregates.csv, metadata.json) of `rows` records."""
    from ctdc_harmonizer.codebook import default_codebook
    from ctdc_harmonizer.synthesis.evaluate import combination_counts
    from ctdc_harmonizer.synthesis.public_release import RECORD_COUNT_ROW

    codebook = default_codebook()
    rng = np.random.default_rng(seed)
    data = {}
    countries = ["UKR", "PHL", "IDN", "MDA", "KHM", "USA", "MEX", "THA", "NGA", "ROU", "VNM"]
    for var in codebook.variables:
        if var.type == "year":
            data[var.name] = rng.integers(2002, 2025, rows).astype(str)
        elif var.type == "binary":
            data[var.name] = np.where(rng.random(rows) < 0.2, "1", "")
        else:
            allowed = countries if var.type == "country" else var.allowed
            weights = np.linspace(4, 1, len(allowed))
            picked = rng.choice(allowed, rows, p=weights / weights.sum())
            data[var.name] = np.where(rng.random(rows) < 0.15, "", picked)
    synthetic = pd.DataFrame(data)[codebook.columns]
    counts = combination_counts(synthetic, 3, codebook)
    aggregates = pd.DataFrame(
        {
            "combination": [RECORD_COUNT_ROW, *counts.index],
            "length": [0, *(counts.index.str.count(";") + 1)],
            "count": [rows, *counts.to_numpy()],
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    synthetic.to_csv(folder / "synthetic.csv", index=False)
    aggregates.to_csv(folder / "aggregates.csv", index=False)
    meta = {
        "title": f"Benchmark release of {rows} synthetic records",
        "version": {"release": f"bench{rows // 1000}k"},
        "method": {"epsilon": 12.0, "delta": 3.9e-7, "reporting_length": 3},
    }
    (folder / "metadata.json").write_text(json.dumps(meta), encoding="utf-8")
    return folder


def open_page(page_path: Path, repeat: int) -> tuple[list[float], float]:
    from playwright.sync_api import sync_playwright

    seconds = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox"], headless=True
        )
        try:
            for _ in range(repeat):
                page = browser.new_page()
                started = time.perf_counter()
                page.goto(page_path.as_uri())
                page.wait_for_selector("body[data-ready='1']", timeout=120_000)
                seconds.append(round(time.perf_counter() - started, 3))
            started = time.perf_counter()
            for column in ("gender", "ageBroad", "isForcedLabour"):
                values = page.eval_on_selector(
                    f"#sel-{column}", "s => [...s.options].map(o => o.value).filter(v => v)"
                )
                page.select_option(f"#sel-{column}", values[0])
            page.inner_text("#syn-count")
            selection = round((time.perf_counter() - started) / 3, 3)
        finally:
            browser.close()
    return seconds, selection


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=260_000)
    parser.add_argument("--public-dir", type=Path)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from ctdc_harmonizer.codebook import default_codebook
    from ctdc_harmonizer.synthesis import explorer

    begun, made = time.perf_counter(), {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.public_dir
        if folder is None:
            folder = synthetic_release(args.rows, Path(tmp) / "public")
            made = {"made_seconds": round(time.perf_counter() - begun, 1)}
        started = time.perf_counter()
        page = explorer.write(folder, default_codebook())
        render = round(time.perf_counter() - started, 2)
        seconds, selection = open_page(page, args.repeat)
        rows = sum(1 for _ in (folder / "synthetic.csv").open(encoding="utf-8")) - 1
        combos = sum(1 for _ in (folder / "aggregates.csv").open(encoding="utf-8")) - 2
        result = {
            "rows": rows,
            "combinations": combos,
            "page_mb": round(page.stat().st_size / 1e6, 2),
            "render_seconds": render,
            "open_seconds_best": min(seconds),
            "open_seconds_median": statistics.median(seconds),
            "selection_seconds": selection,
            "repeat": args.repeat,
            **made,
        }
    print(json.dumps(result))
    OUT.mkdir(exist_ok=True)
    with (OUT / "explorer.jsonl").open("a", encoding="utf-8") as log:
        log.write(json.dumps({"when": time.strftime("%Y-%m-%dT%H:%M:%SZ"), **result}) + "\n")


if __name__ == "__main__":
    main()
