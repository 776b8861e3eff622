"""What a data officer runs on one delivery without making a release: map a file in memory,
and write the restricted list of the values the mapping does not know (`ctdc unmapped`)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd

from ctdc_harmonizer.codebook import default_codebook
from ctdc_harmonizer.harmonize.mapper import MappingResult, map_partner
from ctdc_harmonizer.harmonize.unmapped import restrict_unmapped
from ctdc_harmonizer.ingest.deidentify import deidentify
from ctdc_harmonizer.ingest.extract import read_extract
from ctdc_harmonizer.ingest.files import find_extract_files
from ctdc_harmonizer.mapping.partner import load_partner
from ctdc_harmonizer.mapping.spec import PartnerConfig
from ctdc_harmonizer.paths import mappings_dir
from ctdc_harmonizer.safety import write_report_csv


def harmonize_file(config: PartnerConfig, path: str | Path, year_max: int) -> MappingResult:
    """Read, de-identify and map one delivered file in memory (no release, no warehouse)."""
    result = read_extract(config, Path(path))
    return map_partner(deidentify(config, result.frame), config, default_codebook(), year_max)


def unmapped_report(
    landing: str | Path,
    partner: str,
    out_file: str | Path,
    mappings: str | None = None,
    release_year: int | None = None,
) -> dict:
    """Write the restricted unmapped-values report of a partner's delivery to out_file
    (readable by its owner only): for the data officer whose run failed the coverage gate.
    Nothing else of the run is kept."""
    config = load_partner(Path(mappings or mappings_dir()) / partner)
    year = release_year or dt.date.today().year
    unmapped, unknown, rows = [], [], 0
    for path in find_extract_files(config, Path(landing)):
        result = harmonize_file(config, path, year)
        unmapped.append(result.unmapped)
        unknown.append(result.unknown_rows)
        rows += len(result.outcomes)
    merged = pd.concat(unmapped, ignore_index=True) if unmapped else pd.DataFrame()
    if len(merged):
        merged = merged.groupby(["partner", "field", "source_value"], as_index=False)["count"].sum()
    unknown_rows = pd.concat(unknown, ignore_index=True) if unknown else pd.DataFrame()
    if len(unknown_rows):
        unknown_rows = unknown_rows.groupby("field", as_index=False)["rows"].sum()
    report = restrict_unmapped(
        merged, unknown_rows, rows, config.coded_fields, config.unmapped_min_rows
    )
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.touch(mode=0o600)
    out_file.chmod(0o600)
    write_report_csv(report, out_file)
    listed = int((report["note"] == "").sum()) if len(report) else 0
    return {"partner": partner, "report": str(out_file), "rows": rows, "values_listed": listed}
