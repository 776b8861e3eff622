"""metadata.json: what a release was made from (codebook, mappings, deliveries), no row."""

from __future__ import annotations

from ctdc_harmonizer import __version__
from ctdc_harmonizer.codebook import Codebook
from ctdc_harmonizer.mapping.spec import PartnerConfig

MARKER = "metadata.json"  # a folder holding it is a release this pipeline may replace


def release_metadata(
    release: str,
    release_year: int,
    sequence: int,
    rows: int,
    reconciliation: dict,
    configs: dict[str, PartnerConfig],
    codebook: Codebook,
    unmapped_partner_folders: list[str],
) -> dict:
    """The release's identity: its place in the store, the codebook version and hash, each
    partner's mapping hashes, how it came into this release (delivered, re-harmonized,
    carried forward), the checksum of every file it delivered for it, the files it did not
    read and, per file and reason, how many workbook cells could not be read exactly."""
    partners = {}
    for code, config in sorted(configs.items()):
        entry = reconciliation["partners"].get(code, {})
        partners[code] = {
            "name": config.name,
            "datasource": config.datasource,
            "mapping_sha256": config.mapping_hash,
            "harmonization_sha256": config.harmonization_hash,
            "state": entry.get("state"),
            "mode": config.delivery.mode,
            "last_delivery": entry.get("last_delivery"),
            "files": {name: file["sha256"] for name, file in (entry.get("files") or {}).items()},
            "not_read": entry.get("not_read", {}),
            # Workbook cells that could not be read exactly, per file and reason code
            # (ingest/workbook.py): counts only, never a cell's value.
            "unreadable_cells": entry.get("unreadable_cells", {}),
        }
    return {
        "release": release,
        "release_year": release_year,
        "sequence": sequence,
        "rows": rows,
        "pipeline": {"package": "ctdc-harmonizer", "version": __version__},
        "codebook": {
            "title": codebook.title,
            "version": codebook.version,
            "file": codebook.source_file,
            "sha256": codebook.sha256,
        },
        "columns": codebook.columns,
        "partners": partners,
        "unmapped_partner_folders": unmapped_partner_folders,
        "null": "empty cell",
        "binary_true": "1",
    }
