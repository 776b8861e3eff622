"""The store as a run plans against it: releases so far, each partner's history in counts.

Read once, at plan time, as of the run's **base**: the last release before the one this run
makes (the current head, or the one before it when this run replaces the head release).
Counts, labels, checksums and hashes only.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict

from ctdc_harmonizer.errors import CtdcError
from ctdc_harmonizer.store.records import held_back_release_years
from ctdc_harmonizer.warehouse.connection import warehouse
from ctdc_harmonizer.warehouse.models import (
    DataRelease,
    Delivery,
    DeliveryFile,
    ReportingEntity,
    case_record_table,
    staged_record_table,
)


class ReleaseEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    label: str
    sequence: int
    rows: int


class PartnerHistory(BaseModel):
    """One partner in the store as of the base release."""

    model_config = ConfigDict(frozen=True)

    code: str
    current_records: int = 0
    # (harmonization hash, codebook version) -> current harmonized versions made under them
    # that have a staged row (only those can be harmonized again)
    harmonized_under: dict[str, int] = {}
    # current records without a staged row (loaded before the store existed)
    without_staged: int = 0
    # current records without a harmonized version: rejected when last harmonized
    held_back: int = 0
    # of them, the distinct years from which harmonizing them again may release them
    # (columns.RELEASABLE_FROM; UNKNOWN_RELEASE_YEAR: some are not known)
    held_back_from: list[int] = []
    last_delivery_release: str | None = None
    last_delivery_sequence: int | None = None
    # file checksum -> the release that ingested it
    ingested: dict[str, str] = {}

    def stale_staged(self, harmonization_hash: str, codebook_version: str) -> bool:
        """Some current records were harmonized under another mapping or codebook."""
        return any(
            key != _under(harmonization_hash, codebook_version) for key in self.harmonized_under
        )

    def harmonized_under_others(self, harmonization_hash: str) -> bool:
        """Some current records were harmonized under another mapping."""
        return any(
            key.split(KEY_SEPARATOR)[0] != harmonization_hash for key in self.harmonized_under
        )


KEY_SEPARATOR = "|"


def _under(harmonization_hash: str | None, codebook_version: str) -> str:
    return f"{harmonization_hash or ''}{KEY_SEPARATOR}{codebook_version}"


class StoreState(BaseModel):
    """The store as a run sees it (see the module docstring)."""

    model_config = ConfigDict(frozen=True)

    releases: list[ReleaseEntry] = []
    base: int = 0  # the sequence the run builds on (0: an empty store)
    sequence: int = 1  # the sequence the run's release gets
    replaces: str | None = None  # the head release this run replaces, if any
    base_release_year: int | None = None  # the year the base release was made for
    partners: dict[str, PartnerHistory] = {}

    @property
    def head(self) -> ReleaseEntry | None:
        return self.releases[-1] if self.releases else None

    def label_of(self, sequence: int | None) -> str | None:
        return next((r.label for r in self.releases if r.sequence == sequence), None)


def _current_at(table: sa.Table, base: int) -> sa.ColumnElement[bool]:
    return sa.and_(
        table.c.valid_from <= base, sa.or_(table.c.valid_to.is_(None), table.c.valid_to > base)
    )


def read_store_state(url: str, release: str, exists: bool) -> StoreState:
    """Releases so far and each partner's history as of the base of a run making `release`.
    `exists`: whether the warehouse already exists (a new SQLite file has nothing to read).

    Raises CtdcError when `release` names a release that is not the latest: history cannot
    be rewritten (an earlier release can be rebuilt read-only: `ctdc history rebuild`)."""
    if not exists:
        return StoreState()
    with warehouse(url, "reading the store") as db:
        releases = [
            ReleaseEntry(label=label, sequence=sequence, rows=rows)
            for label, sequence, rows in db.execute(
                sa.select(DataRelease.label, DataRelease.sequence, DataRelease.row_count).order_by(
                    DataRelease.sequence
                )
            )
        ]
        head = releases[-1] if releases else None
        replaces = None
        if head is not None and head.label == release:
            replaces, base, sequence = head.label, head.sequence - 1, head.sequence
        elif any(r.label == release for r in releases):
            raise CtdcError(
                f"release {release} is not the latest release ({head.label} is): history is "
                "never rewritten; make a new release, or rebuild that one read-only with "
                f"`ctdc history rebuild --release {release}`"
            )
        else:
            base = head.sequence if head else 0
            sequence = base + 1
        entities = dict(db.execute(sa.select(ReportingEntity.id, ReportingEntity.code)))
        partners: dict[str, dict] = {code: {"code": code} for code in entities.values()}
        case = case_record_table
        rows = db.execute(
            sa.select(
                case.c.entity_id,
                case.c.mapping_sha256,
                case.c.codebook_version,
                sa.func.count(),
                sa.func.sum(sa.case((case.c.staged_record_id.is_(None), 1), else_=0)),
            )
            .where(_current_at(case, base))
            .group_by(case.c.entity_id, case.c.mapping_sha256, case.c.codebook_version)
        )
        for entity_id, mapping, version, count, unstaged in rows:
            entry = partners[entities[entity_id]]
            staged_count = int(count) - int(unstaged or 0)
            if staged_count:
                under = entry.setdefault("harmonized_under", {})
                key = _under(mapping, version)
                under[key] = under.get(key, 0) + staged_count
            entry["current_records"] = entry.get("current_records", 0) + int(count)
            entry["without_staged"] = entry.get("without_staged", 0) + int(unstaged or 0)
        staged = staged_record_table
        held_back = db.execute(
            sa.select(staged.c.entity_id, sa.func.count())
            .where(_current_at(staged, base))
            .where(
                ~sa.exists().where(case.c.staged_record_id == staged.c.id, _current_at(case, base))
            )
            .group_by(staged.c.entity_id)
        )
        for entity_id, count in held_back:
            entry = partners[entities[entity_id]]
            entry["current_records"] = entry.get("current_records", 0) + int(count)
            entry["held_back"] = int(count)
            entry["held_back_from"] = held_back_release_years(db, entities[entity_id], base)
        base_year = None
        if base:
            meta = db.execute(
                sa.select(DataRelease.metadata_json).where(DataRelease.sequence == base)
            )
            base_year = json.loads(meta[0][0] or "{}").get("release_year") if meta else None
        sequences = {r.label: r.sequence for r in releases}
        files = db.execute(
            sa.select(Delivery.entity_id, Delivery.release_label, DeliveryFile.sha256).join(
                DeliveryFile, DeliveryFile.delivery_id == Delivery.id
            )
        )
        for entity_id, label, sha256 in files:
            if sequences.get(label, 0) > base:  # delivered by the release being replaced
                continue
            entry = partners[entities[entity_id]]
            entry.setdefault("ingested", {})[sha256] = label
            if sequences[label] > (entry.get("last_delivery_sequence") or 0):
                entry["last_delivery_sequence"] = sequences[label]
                entry["last_delivery_release"] = label
    return StoreState(
        releases=[r for r in releases if r.sequence <= base],
        base=base,
        sequence=sequence,
        replaces=replaces,
        base_release_year=base_year,
        partners={code: PartnerHistory(**entry) for code, entry in partners.items()},
    )
