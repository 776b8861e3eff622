"""What each step of the annual update produces: small typed results, paths and counts only.

A result is what the next steps receive (its type names it in their signatures, which is how
the declaration wires them: pipeline/declaration.py), and what XCom, a log line or the
command line carry (`model_dump(mode="json")`). No frame and no value of a record is ever
part of a result: frames stay in the run's work folder, named by the result that owns them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class StepResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StagedPartner(StepResult):
    """A partner's records to harmonize: its delivered files read and de-identified,
    withdrawals erased, duplicates merged; plus, when the partner is re-harmonized, its
    stored records (the store's staged values)."""

    partner: str
    files: int
    rows_read: int
    erased: int
    duplicates_merged: int
    erased_by_registry: int
    stored_rows: int  # stored records harmonized again (mapping or codebook changed)
    work: str  # the partner's work folder


class CheckedStaged(StepResult):
    """The staged records honour the partner's field contract (pandera)."""

    staged: StagedPartner
    rows: int


class HarmonizedPartner(StepResult):
    """A partner's staged records harmonized onto the codebook; the coverage gate passed."""

    partner: str
    harmonized: int
    rejected: int
    excluded: int
    unmapped_values: int
    work: str


class CheckedHarmonized(StepResult):
    """The harmonized records satisfy the codebook's pandera schema."""

    harmonized: HarmonizedPartner
    rows: int


class PartnerChanges(StepResult):
    """What the partner's delivery and mapping change in the store (store/changes.py)."""

    partner: str
    new: int
    revised: int
    unchanged: int
    retired: int
    reharmonized: int
    held_back: int
    erased_stored: int
    current: int  # the partner's records once this release is committed
    work: str


class CarriedRecords(StepResult):
    """What the release takes of each partner carried forward (no work this run): its
    records current at the base release, read from the store into the work folder, so that
    nothing after the chains reads the store while the commit writes it (pipeline/local.py)."""

    release: str
    partners: dict[str, int]  # partner -> its records read
    work: str


class AssembledRelease(StepResult):
    """Every partner's current records in one table, linked and reconciled."""

    release: str
    rows: int  # records in the release
    partners: list[str]  # every partner with records in the store (changed or carried)
    changed: dict[str, str]  # partner -> its chain's work folder (its changes to commit)
    invariant_holds: bool
    work: str


class ReleaseFolder(StepResult):
    """The complete release folder, built aside (not yet published)."""

    release: str
    staged_dir: str
    release_dir: str  # where publication will put it
    folder_sha256: str
    rows: int
    totals: dict[str, int]
    quality: dict


class ReleaseSummary(StepResult):
    """The headline the approval request shows (counts only)."""

    release: str
    rows: int
    partners: dict[str, int]  # records released per partner
    not_read: dict[str, int] = {}  # delivered files not read per partner (reasons: metadata)
    subject: str
    body: str
    report: str  # the folder the report page reads (staged until published)


class PartnerOutcome(StepResult):
    """One healthy partner of a failed run: where its delivered rows went (its receipt's
    totals) and what its chain would change in the store."""

    partner: str
    files: int
    reconciles: bool
    rows_read: int
    harmonized: int
    rejected: int
    excluded: int
    erased: int
    duplicates_merged: int
    new: int
    revised: int
    unchanged: int
    retired: int
    current: int


class HealthyPartners(StepResult):
    """What a failed run keeps of the partners whose chains succeeded (counts only:
    pipeline/annual_update/partial.py)."""

    release: str
    partners: list[PartnerOutcome]
    rejected: list[dict[str, Any]]  # partner, reason, column, rows


class CommittedRelease(StepResult):
    """The release and its changes written to the store in one transaction."""

    release: str
    sequence: int
    staged_inserted: int
    versions_inserted: int
    versions_closed: int
    deliveries: int
    withdrawals_recorded: int
    records_erased: int
    exclusions: int
    releases_to_purge: list[str]
    work: str


class PublishedRelease(StepResult):
    """The release folder renamed into place."""

    release: str
    release_dir: str
    folder_sha256: str
    rows: int


class PurgedReleases(StepResult):
    """Earlier release folders rewritten without the people withdrawn in this run."""

    releases_purged: int
    records_purged: int
    folders_rewritten: int


class HandedOff(StepResult):
    """The hand-off folder for synthesis (table + manifest)."""

    release: str
    rows: int
    handoff: str
    manifest_sha256: str


class Finished(StepResult):
    release: str
    work_folder_removed: bool


class SentReceipts(StepResult):
    """Receipts copied to the partners' outboxes: partner -> where (kind, connection, path)."""

    release: str
    sent: dict[str, str] = {}
    not_sent: dict[str, str] = {}  # partner -> why (no outbox, the outbox unreachable)


class ClearedDeliveries(StepResult):
    """Pulled copies deleted after the commit: plain copies read into the store, sealed
    copies past their retention (counts of files)."""

    plain_deleted: int = 0
    sealed_deleted: int = 0
    sealed_kept: int = 0


class ReceiptPaths(StepResult):
    """One partner's receipt: release/receipts.py writes both files."""

    json_path: str
    html_path: str


class PartnerReceipts(StepResult):
    """The receipts of this run, one per partner that delivered: partner -> its files
    (`<out>/receipts/<release>/<partner>/receipt.json` and `receipt.html`)."""

    release: str
    receipts: dict[str, ReceiptPaths]


class AnnualUpdateRun(StepResult):
    """A whole annual update from the command line: each step's result (None when the run
    had nothing to do)."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    plan: Any
    assembled: AssembledRelease | None = None
    receipts: PartnerReceipts | None = None
    folder: ReleaseFolder | None = None
    summary: ReleaseSummary | None = None
    committed: CommittedRelease | None = None
    published: PublishedRelease | None = None
    purged: PurgedReleases | None = None
    handoff: HandedOff | None = None
    sent: SentReceipts | None = None
    cleared: ClearedDeliveries | None = None
