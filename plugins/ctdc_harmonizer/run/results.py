"""What each step of the annual update returns: small typed results, paths and counts only.

A result dumps to the plain dict XCom, a log line or the CLI may carry (run/airflow.py's
`to_xcom`); no frame, no value of a record is ever part of a result.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StepResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Staged(StepResult):
    """A partner's delivered files read, de-identified, withdrawals erased, duplicates merged."""

    partner: str
    files: int
    rows_read: int
    erased: int
    duplicates_merged: int
    erased_by_registry: int
    staged: str


class Checked(StepResult):
    """A frame passed its data contract (pandera)."""

    partner: str
    rows: int


class Mapped(StepResult):
    """A partner's staged rows harmonized onto the codebook; the coverage gate passed."""

    partner: str
    harmonized: int
    rejected: int
    excluded: int
    unmapped_values: int
    harmonized_path: str


class Combined(StepResult):
    rows: int
    combined: str
    invariant_holds: bool


class ReleaseWritten(StepResult):
    """The release folder, complete, built aside (not yet published)."""

    release: str
    release_dir: str
    staged_dir: str
    folder_sha256: str
    rows: int
    totals: dict[str, int]
    quality: dict


class PurgeCounts(StepResult):
    withdrawals_recorded: int
    records_purged: int
    releases_purged: int
    folders_rewritten: int


class WarehouseLoaded(StepResult):
    """The warehouse loaded in one transaction and the release folder published."""

    release: str
    case_records: int
    batches: int
    entities: int
    dialect: str
    method: str
    folder_sha256: str
    privacy: PurgeCounts


class HandedOff(StepResult):
    """The hand-off folder for synthesis (table + manifest)."""

    release: str
    rows: int
    handoff: str
    manifest_sha256: str


class Finished(StepResult):
    release: str
    work_folder_removed: bool


class RunSummary(StepResult):
    """A whole run from the command line."""

    written: ReleaseWritten
    warehouse: WarehouseLoaded
    handoff: HandedOff
    unmapped_partner_folders: list[str]
