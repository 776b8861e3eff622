"""metadata.json: what a release was made from (codebook, mappings, files), no row."""

from __future__ import annotations

from ctdc_harmonizer import __version__
from ctdc_harmonizer.codebook import Codebook
from ctdc_harmonizer.mapping.spec import PartnerConfig

MARKER = "metadata.json"  # a folder holding it is a release this pipeline may replace


def release_metadata(
    release: str,
    release_year: int,
    rows: int,
    reconciliation: dict,
    configs: dict[str, PartnerConfig],
    codebook: Codebook,
) -> dict:
    """The release's identity: codebook version and hash, each partner's mapping hash and the
    checksum of every delivered file."""
    partners = {
        code: {
            "name": config.name,
            "datasource": config.datasource,
            "mapping_sha256": config.mapping_hash,
            "files": {
                name: entry["sha256"]
                for name, entry in reconciliation["partners"][code]["files"].items()
            },
        }
        for code, config in sorted(configs.items())
    }
    return {
        "release": release,
        "release_year": release_year,
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
        "null": "empty cell",
        "binary_true": "1",
    }
