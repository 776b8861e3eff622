"""The public release folder: only what may be published, written aside and renamed.

`<out>/public/<release>/` holds exactly: synthetic.csv, aggregates.csv, the codebook file,
metadata.json (descriptive metadata, manual Annex 5 checklist), the public comparability
report (synthetic vs DP aggregates: comparability.json and comparability.html) and the
explorer (explorer.html, made from the folder's own public files: explorer.py).
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from ctdc_harmonizer import __version__
from ctdc_harmonizer.codebook import Codebook
from ctdc_harmonizer.synthesis import explorer
from ctdc_harmonizer.synthesis.fit import DELIMITER, SEPARATOR, DpAggregates

PUBLIC_FILES = (
    "synthetic.csv",
    "aggregates.csv",
    "metadata.json",
    "comparability.json",
    "comparability.html",
    "explorer.html",
)
RECORD_COUNT_ROW = "(protected number of records)"


def aggregates_frame(aggregates: DpAggregates) -> pd.DataFrame:
    """combination, length, count; the first row is the DP protected number of records."""
    frame = aggregates.frame().sort_values(["length", "combination"], kind="stable")
    head = pd.DataFrame(
        {"combination": [RECORD_COUNT_ROW], "length": [0], "count": [aggregates.protected_records]}
    )
    return pd.concat([head, frame], ignore_index=True)


def coverage(aggregates: DpAggregates, column: str) -> list[str]:
    """Values of a column with a positive DP 1-count (what the public data itself shows)."""
    prefix = column + SEPARATOR
    return sorted(
        k[len(prefix) :]
        for k, v in aggregates.counts.items()
        if v > 0 and DELIMITER not in k and k.startswith(prefix)
    )


def descriptive_metadata(
    release: str,
    manifest: dict,
    partners: dict[str, str],
    aggregates: DpAggregates,
    synthetic_rows: int,
    synthetic_rows_without_year: int,
    sampler: str,
    config_version: int,
    codebook: Codebook,
) -> dict:
    years = coverage(aggregates, "yearOfRegistration")
    countries = coverage(aggregates, "CountryOfExploitation")
    params = aggregates.params
    return {
        "title": f"{codebook.title} - synthetic dataset, release {release}",
        "file_names": ["synthetic.csv", "aggregates.csv", Path(codebook.source_path).name],
        "organization": "Counter Trafficking Data Collaborative (CTDC)",
        "contributing_partners": partners,
        "date_submitted": datetime.now(UTC).date().isoformat(),
        "version": {
            "release": release,
            "codebook": codebook.version,
            "synthesis_config": config_version,
            "pipeline": __version__,
        },
        "indicators": codebook.columns,
        "number_of_cases": {
            "synthetic_records": synthetic_rows,
            "protected_number_of_records": aggregates.protected_records,
            # records whose year the aggregates did not release, and attributes no dated
            # record could hold with released combinations only (docs/privacy.md section 9)
            "synthetic_records_without_year": synthetic_rows_without_year,
        },
        "coverage": {
            "years": [years[0], years[-1]] if years else [],
            "countries_of_exploitation": countries,
        },
        "method": {
            "description": (
                "Differentially private aggregates of all attribute combinations up to the "
                "reporting length, computed with "
                + (
                    "the CTDC pipeline's port of pac-synth's DP aggregation"
                    if aggregates.engine == "own"
                    else "pac-synth's DpAggregateSeededSynthesizer"
                )
                + " (the mechanism of Microsoft Research's Synthetic Data Showcase); synthetic "
                "records sampled from those aggregates only (post-processing)."
            ),
            "aggregation_engine": aggregates.engine,
            "sampler": sampler,
            "epsilon": params.epsilon,
            "delta": params.delta,
            "reporting_length": params.reporting_length,
            "parameters": params.model_dump(mode="json"),  # exactly what the fit used
        },
        "null": "empty cell",
        "binary_true": "1",
        "contact": "CTDC data team (see the publisher of the codebook)",
        "source_manifest": {"codebook_sha256": manifest["codebook"]["sha256"]},
    }


def publish(
    public_root: Path,
    release: str,
    synthetic: pd.DataFrame,
    aggregates: DpAggregates,
    metadata: dict,
    public_report: dict,
    public_html: str,
    codebook: Codebook,
) -> Path:
    """Write the public folder aside, then swap it in: readers never see a partial folder."""
    public_root.mkdir(parents=True, exist_ok=True)
    staging = public_root / f".{release}.tmp"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    synthetic[codebook.columns].to_csv(staging / "synthetic.csv", index=False)
    aggregates_frame(aggregates).to_csv(staging / "aggregates.csv", index=False)
    shutil.copyfile(codebook.source_path, staging / Path(codebook.source_path).name)
    for name, payload in (("metadata.json", metadata), ("comparability.json", public_report)):
        (staging / name).write_text(
            json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False), encoding="utf-8"
        )
    (staging / "comparability.html").write_text(public_html, encoding="utf-8")
    explorer.write(staging, codebook)  # from the staged public files only
    target = public_root / release
    old = public_root / f".{release}.old"
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return target
