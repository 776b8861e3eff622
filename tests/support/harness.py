"""Helpers shared by the partner test modules: map one file, run one partner."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pandas as pd

from ctdc_harmonizer.mapping.spec import PartnerConfig
from ctdc_harmonizer.pipeline.local import run_annual_update
from ctdc_harmonizer.pipeline.results import AnnualUpdateRun
from ctdc_harmonizer.run.file_check import harmonize_file


def mapped(config: PartnerConfig, path: Path, year_max: int = 2025):
    """The mapping result of one file; the partner's mapping must know every value."""
    result = harmonize_file(config, path, year_max=year_max)
    assert result.unmapped.empty, result.unmapped
    return result


def all_harmonized(config: PartnerConfig, path: Path, year_max: int = 2025) -> pd.DataFrame:
    """The harmonized rows of a file whose rows must all be harmonized (input order)."""
    result = mapped(config, path, year_max)
    assert (result.outcomes["outcome"] == "harmonized").all()
    return result.harmonized


def run_partner(landing: Path, tmp_path: Path, partner: str, mappings: Path) -> AnnualUpdateRun:
    """`ctdc run` for one partner into tmp_path/out, with a SQLite warehouse in tmp_path."""
    return run_annual_update(
        str(landing),
        str(tmp_path / "out"),
        "2025",
        partners=[partner],
        mappings=str(mappings),
        warehouse_url=f"sqlite:///{tmp_path}/w.sqlite",
    )


def release_files(folder: Path) -> dict[str, str]:
    """Every file of a release folder with its SHA-256, except Great Expectations' Data Docs
    (their HTML embeds the time of the run)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "data_docs" not in p.relative_to(folder).parts
    }


# When a row was written: differs between two runs of the same inputs.
CLOCK_COLUMNS = {"created_at", "recorded_at", "received_at"}


def _without_folder_hash(metadata: str) -> dict:
    """A release's metadata less its folder's hash (the folder's quality pages are dated)."""
    found = json.loads(metadata)
    found.pop("folder_sha256")
    return found


def store_tables(database: Path) -> dict[str, list[tuple]]:
    """Every table's rows (ids included, clock columns left out), in a fixed order; the
    schema (indexes included) as its SQL."""
    conn = sqlite3.connect(database)
    try:
        names = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        found = {
            "schema": sorted(
                conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
            )
        }
        for name in names:
            columns = [
                column
                for (_, column, *_) in conn.execute(f'PRAGMA table_info("{name}")')
                if column not in CLOCK_COLUMNS
            ]
            listed = ", ".join(f'"{c}"' for c in columns)
            order = ", ".join(str(i + 1) for i in range(len(columns)))
            rows = conn.execute(f'SELECT {listed} FROM "{name}" ORDER BY {order}').fetchall()
            if name == "data_release":
                at = columns.index("metadata_json")
                rows = [(*r[:at], _without_folder_hash(r[at]), *r[at + 1 :]) for r in rows]
            found[name] = rows
        return found
    finally:
        conn.close()
