"""Our DP aggregation against pac-synth's fit, fit after fit on the same table (issue 19).

    python benchmarks/compare_engines.py --release demo/releases/handoff/demo-2026 --fits 20
    python benchmarks/compare_engines.py --fits 6 \
        --release benchmarks/out/releases/n65000/handoff/bench65k-2025

Both engines run the same mechanism with fresh noise each fit, so no two fits agree exactly;
what must agree is the distribution of what they release. Per engine and combination length,
over the fits: how many combinations were released, how many of them the sensitive table does
not hold (fabricated), the mean absolute error of the released counts against the sensitive
counts, and the error of the protected record count; with Welch's t for each difference (|t|
beyond ~3 would say the engines differ). Also the seconds per fit and, with --memory, each
engine's peak memory in a fresh process. Not a timed test: run it by hand, under the lock.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from ctdc_harmonizer.codebook import default_codebook
from ctdc_harmonizer.synthesis import fit
from ctdc_harmonizer.synthesis.config import load_synthesis_config
from ctdc_harmonizer.synthesis.evaluate import combination_counts


def one_fit(engine: str, strings: pd.DataFrame, params, codebook) -> tuple[dict, int, float]:
    started = time.perf_counter()
    if engine == "own":
        aggregates, _ = fit.fit_own(strings, "", params, codebook)
    else:
        aggregates, _, _ = fit.fit(fit.dataset(strings), "", params, codebook, 2, False)
    return aggregates.counts, aggregates.protected_records, time.perf_counter() - started


def measures(counts: dict, protected: int, truth: pd.Series, rows: int, length_max: int) -> dict:
    out = {"protected_error": protected - rows}
    for length in range(1, length_max + 1):
        keys = [k for k in counts if k.count(";") + 1 == length]
        true = truth.reindex(keys).fillna(0).to_numpy()
        released = pd.Series([counts[k] for k in keys], dtype="float64").to_numpy()
        out[f"released_{length}"] = len(keys)
        out[f"fabricated_{length}"] = int((true == 0).sum())
        out[f"mae_{length}"] = float(abs(released - true).mean()) if len(keys) else 0.0
    return out


def welch(a: list[float], b: list[float]) -> float | None:
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = statistics.variance(a), statistics.variance(b)
    spread = math.sqrt(va / len(a) + vb / len(b))
    return (statistics.mean(a) - statistics.mean(b)) / spread if spread else 0.0


def peak_memory(engine: str, release: Path) -> float:
    """VmHWM of a fresh process that reads the table and fits it once (MiB)."""
    code = f"""
import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})
from compare_engines import load, one_fit
strings, params, codebook = load({str(release)!r})
one_fit({engine!r}, strings, params, codebook)
print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1]) / 1024


def load(release: str):
    codebook = default_codebook()
    frame = pd.read_parquet(Path(release) / "harmonized.parquet")
    return fit.as_strings(frame, codebook), load_synthesis_config().dp, codebook


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", required=True, help="a hand-off folder (harmonized.parquet)")
    parser.add_argument("--fits", type=int, default=10, help="fits per engine")
    parser.add_argument("--memory", action="store_true")
    args = parser.parse_args()
    strings, params, codebook = load(args.release)
    truth = combination_counts(strings, params.reporting_length, codebook)
    runs: dict[str, list[dict]] = {"own": [], "pacsynth": []}
    seconds: dict[str, list[float]] = {"own": [], "pacsynth": []}
    for _ in range(args.fits):  # alternating, so that load drifts affect both alike
        for engine in runs:
            counts, protected, took = one_fit(engine, strings, params, codebook)
            runs[engine].append(
                measures(counts, protected, truth, len(strings), params.reporting_length)
            )
            seconds[engine].append(took)
    table = {}
    for name in runs["own"][0]:
        own = [r[name] for r in runs["own"]]
        pac = [r[name] for r in runs["pacsynth"]]
        t = welch(own, pac)
        table[name] = {
            "own": round(statistics.mean(own), 2),
            "own_sd": round(statistics.stdev(own), 2) if len(own) > 1 else None,
            "pacsynth": round(statistics.mean(pac), 2),
            "pacsynth_sd": round(statistics.stdev(pac), 2) if len(pac) > 1 else None,
            "welch_t": round(t, 2) if t is not None else None,
        }
    result = {
        "release": args.release,
        "rows": len(strings),
        "fits_per_engine": args.fits,
        "epsilon": params.epsilon,
        "seconds_per_fit": {e: round(statistics.median(s), 2) for e, s in seconds.items()},
        "measures": table,
    }
    if args.memory:
        release = Path(args.release)
        result["peak_mib"] = {e: round(peak_memory(e, release)) for e in runs}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
