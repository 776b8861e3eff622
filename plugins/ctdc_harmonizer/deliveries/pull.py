"""Pull complete, new deliveries from the partners' drops into the private landing folder.

For each partner of the sources file (deliveries/sources.py), before the run is planned:

1. list its drop (names, sizes, times) and decide whether the delivery is complete
   (deliveries/complete.py: the partner's `datapackage.json`, or the stability window);
2. skip what is not new: a file whose SHA-256 the store already ingested for the partner
   (delivery_file) or that was already pulled (delivery_received); under the stability
   convention, the same name, size and time already pulled;
3. copy the new files into `<landing>/<partner>/` (a folder only the pipeline's user can
   read), each aside first, checking each copy's SHA-256 against the manifest (a mismatch
   refuses the partner's whole delivery, located: partner, file, reason) and, under the
   stability convention, that the file did not move during the copy;
4. record each file in the warehouse (delivery_received: partner, file, SHA-256, size,
   received time, source) and, when the source keeps copies, seal an AES-256-GCM copy in
   `<out>/.deliveries/<partner>/` (deliveries/vault.py) until its retention ends.

A partner's problem (waiting, refused, unreachable) does not stop the others: it is its
`Arrival`, which the plan carries into the approval request. `clear_pulled_deliveries`,
after the commit, deletes the plain copies the store now holds and sealed copies past
their retention. Nothing here reads a file's content beyond its checksum.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import logging
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from ctdc_harmonizer.deliveries.complete import Expected, Readiness, readiness
from ctdc_harmonizer.deliveries.remote import Drop, open_drop, transport_error
from ctdc_harmonizer.deliveries.sources import (
    MANIFEST_NAME,
    STABILITY,
    Source,
    load_sources,
    sources_path,
)
from ctdc_harmonizer.errors import CtdcError, InfrastructureError
from ctdc_harmonizer.fileio import private_folder

log = logging.getLogger(__name__)
SEALED_FOLDER = ".deliveries"  # under the out folder: the encrypted copies
PULLED, NOTHING_NEW, WAITING, REFUSED, UNREACHABLE = (
    "pulled",
    "nothing_new",
    "waiting",
    "refused",
    "unreachable",
)


class PulledFile(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    sha256: str
    size_bytes: int


class Arrival(BaseModel):
    """What became of one partner's drop in this run (names and reasons only)."""

    model_config = ConfigDict(frozen=True)

    partner: str
    state: Literal["pulled", "nothing_new", "waiting", "refused", "unreachable"]
    why: str = ""
    source: str = ""
    files: list[PulledFile] = []


class Arrivals(BaseModel):
    """The pull before a run: every partner with a source, and whether the wait for
    deliveries ended at its deadline (then the partners not pulled are carried)."""

    model_config = ConfigDict(frozen=True)

    sources: str | None = None
    partners: dict[str, Arrival] = {}
    deadline_passed: bool = False

    @property
    def pulled(self) -> list[str]:
        return sorted(p for p, a in self.partners.items() if a.state == PULLED)

    def lines(self) -> list[str]:
        """For the approval request: who delivered, who did not and why."""
        if not self.partners:
            return []
        head = "Deliveries pulled from the partners' drops"
        if self.deadline_passed:
            head += " (the wait ended at its deadline: partners not pulled are carried)"
        lines = [f"**{head}:**"]
        for partner, arrival in sorted(self.partners.items()):
            text = arrival.state.replace("_", " ")
            if arrival.files:
                text += f", {len(arrival.files)} file(s)"
            if arrival.why:
                text += f": {arrival.why}"
            lines.append(f"- {partner}: {text}")
        return lines


def _warehouse_url(out: str, warehouse_url: str | None) -> str:
    from ctdc_harmonizer.warehouse.schema import default_warehouse_url

    return warehouse_url or default_warehouse_url(out)


def known_files(url: str, partner: str) -> tuple[set[str], set[tuple[str, int, float]]]:
    """The SHA-256s the store ingested or pulled for the partner, and the (name, size, time)
    of the files pulled (the stability convention's identity)."""
    import sqlalchemy as sa

    from ctdc_harmonizer.warehouse.connection import warehouse
    from ctdc_harmonizer.warehouse.models import (
        Delivery,
        DeliveryFile,
        DeliveryReceived,
        ReportingEntity,
    )

    ingested = (
        sa.select(DeliveryFile.sha256)
        .join(Delivery, Delivery.id == DeliveryFile.delivery_id)
        .join(ReportingEntity, ReportingEntity.id == Delivery.entity_id)
        .where(ReportingEntity.code == partner)
    )
    received = sa.select(
        DeliveryReceived.sha256,
        DeliveryReceived.file_name,
        DeliveryReceived.size_bytes,
        DeliveryReceived.source_mtime,
    ).where(DeliveryReceived.partner == partner)
    with warehouse(url, "reading the files already received") as conn:
        shas = {row[0] for row in conn.execute(ingested)}
        seen = set()
        for sha, name, size, mtime in conn.execute(received):
            shas.add(sha)
            seen.add((name, int(size), float(mtime)))
    return shas, seen


def _manifest(drop: Drop, listed: dict) -> bytes | None:
    if MANIFEST_NAME not in listed:
        return None
    buffer = io.BytesIO()
    drop.copy_to(MANIFEST_NAME, buffer)
    return buffer.getvalue()


def drop_readiness(source: Source) -> Readiness:
    """Is the partner's delivery complete (without copying anything but its manifest)?"""
    drop = open_drop(source)
    try:
        listed = drop.entries()
        return readiness(source, listed, _manifest(drop, listed))
    except CtdcError:
        raise
    except Exception as exc:  # the transport's own text may name a host or user: not kept
        raise transport_error(source, "list", exc) from None


def new_files(source: Source, ready: Readiness, url: str, mode: str) -> list[Expected]:
    """The files of a complete delivery to pull: none when nothing is new; every file when
    anything is and the partner delivers its whole dataset each time (mode `full`)."""
    shas, seen = known_files(url, source.partner)

    def is_new(item: Expected) -> bool:
        if item.sha256 is not None:
            return item.sha256 not in shas
        return (item.name, item.size, float(item.mtime)) not in seen

    new = [item for item in ready.files if is_new(item)]
    return list(ready.files) if new and mode == "full" else new


def check_arrivals(
    out: str, sources: str | None = None, warehouse_url: str | None = None
) -> dict[str, str]:
    """Each partner's state now, without pulling: pulled-to-be ('ready'), nothing new,
    waiting, refused or unreachable. What the deferrable wait polls (names only)."""
    path = sources_path(sources)
    if path is None:
        return {}
    url = _warehouse_url(out, warehouse_url)
    _migrated(url, once=True)
    states = {}
    for partner, source in load_sources(path).items():
        try:
            ready = drop_readiness(source)
        except InfrastructureError:
            states[partner] = UNREACHABLE
            continue
        if ready.refused:
            states[partner] = REFUSED
        elif not ready.complete:
            states[partner] = WAITING
        else:
            mode = _delivery_mode(partner)
            states[partner] = "ready" if new_files(source, ready, url, mode) else NOTHING_NEW
    return states


def _delivery_mode(partner: str, mappings: str | None = None) -> str:
    from ctdc_harmonizer.mapping.partner import load_partner
    from ctdc_harmonizer.paths import mappings_dir

    return load_partner(Path(mappings or mappings_dir()) / partner).delivery.mode


_MIGRATED: set[str] = set()  # by the wait: once per process (it looks every minute)


def _migrated(url: str, once: bool = False) -> None:
    from ctdc_harmonizer.warehouse import migrate

    if not (once and url in _MIGRATED):
        migrate(url)  # the pull records into delivery_received; a new warehouse is created
        _MIGRATED.add(url)


def _copy_checked(drop: Drop, source: Source, item: Expected, folder: Path) -> tuple[Path, str]:
    """Copy one file beside its final place; its SHA-256 computed while it is written."""
    part = folder / f".{item.name}.part"

    class Hashing(io.RawIOBase):
        def __init__(self, handle):
            self.handle, self.digest, self.size = handle, hashlib.sha256(), 0

        def writable(self) -> bool:
            return True

        def write(self, block) -> int:
            self.digest.update(block)
            self.size += len(block)
            return self.handle.write(block)

    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        hashing = Hashing(handle)
        try:
            drop.copy_to(item.name, hashing)
        except Exception as exc:
            part.unlink(missing_ok=True)
            raise transport_error(source, f"copy '{item.name}' from", exc) from None
    return part, hashing.digest.hexdigest()


def _remove_if_empty(folder: Path) -> None:
    """An empty partner folder would read as a delivery without its files: none is left."""
    import contextlib

    with contextlib.suppress(OSError):
        folder.rmdir()  # only when empty


def _discard(parts: list[Path]) -> None:
    for part in parts:
        part.unlink(missing_ok=True)
    if parts:
        _remove_if_empty(parts[0].parent)


def _refuse(source: Source, parts: list[Path], why: str) -> Arrival:
    _discard(parts)
    log.warning("partner %s: delivery refused: %s", source.partner, why)
    return Arrival(partner=source.partner, state=REFUSED, why=why, source=source.where)


def pull_partner(
    source: Source, landing: Path, out: Path, url: str, mode: str, now: dt.datetime
) -> Arrival:
    """One partner's pull (module docstring)."""
    import sqlalchemy as sa

    from ctdc_harmonizer.deliveries import vault
    from ctdc_harmonizer.warehouse.connection import warehouse
    from ctdc_harmonizer.warehouse.models import DeliveryReceived

    base = {"partner": source.partner, "source": source.where}
    ready = drop_readiness(source)
    if ready.refused:
        return _refuse(source, [], ready.refused)
    if not ready.complete:
        return Arrival(state=WAITING, why=ready.waiting, **base)
    wanted = new_files(source, ready, url, mode)
    if not wanted:
        return Arrival(state=NOTHING_NEW, why="every file already received", **base)
    key = vault.delivery_key() if source.keep_encrypted_days else None  # no key: no pull
    drop = open_drop(source)
    folder = private_folder(landing / source.partner)
    parts, digests = [], {}
    for item in wanted:
        try:
            part, digest = _copy_checked(drop, source, item, folder)
        except InfrastructureError:
            _discard(parts)
            _remove_if_empty(folder)
            raise
        parts.append(part)
        if item.sha256 is not None and digest != item.sha256:
            return _refuse(
                source,
                parts,
                f"file '{item.name}': its SHA-256 does not match {MANIFEST_NAME} (corrupted "
                "or changed after the manifest was written): send it again",
            )
        digests[item.name] = digest
    if source.complete == STABILITY:  # moved during the copy: not complete after all
        listed = open_drop(source).entries()
        for item in wanted:
            now_there = listed.get(item.name)
            if now_there is None or (now_there.size, now_there.mtime) != (item.size, item.mtime):
                _discard(parts)
                why = f"file '{item.name}' changed during the copy"
                return Arrival(state=WAITING, why=why, **base)
    until = now + dt.timedelta(days=source.keep_encrypted_days) if key else None
    rows, pulled = [], []
    for item, part in zip(wanted, parts, strict=True):
        sha = digests[item.name]
        if key is not None:
            sealed = private_folder(out / SEALED_FOLDER / source.partner)
            vault.seal(part, sealed / f"{sha}.sealed", source.partner, item.name, sha, key)
        part.replace(folder / item.name)
        pulled.append(PulledFile(name=item.name, sha256=sha, size_bytes=item.size))
        rows.append(
            {
                "partner": source.partner,
                "file_name": item.name,
                "sha256": sha,
                "size_bytes": item.size,
                "source_mtime": float(item.mtime),
                "received_at": now,
                "source": source.where,
                "complete_by": source.complete,
                "encrypted_until": until,
            }
        )
    table = DeliveryReceived.__table__
    with warehouse(url, "recording the delivery received", write=True) as conn:
        for row in rows:  # a file pulled again (rejected run, then re-pulled): one row
            conn.execute(
                sa.delete(table).where(
                    table.c.partner == row["partner"],
                    table.c.file_name == row["file_name"],
                    table.c.sha256 == row["sha256"],
                )
            )
        conn.execute(sa.insert(table), rows)
    log.info("partner %s: %d file(s) pulled from %s", source.partner, len(pulled), source.where)
    return Arrival(state=PULLED, files=pulled, **base)


def pull_deliveries(
    landing: str,
    out: str,
    sources: str | None = None,
    warehouse_url: str | None = None,
    mappings: str | None = None,
    deadline_passed: bool = False,
    partners: list[str] | None = None,
) -> Arrivals:
    """Pull every partner's complete, new delivery (module docstring). No sources file
    ($CTDC_SOURCES or `sources`): nothing to pull, the landing folder is read as it is.
    `partners`: the run reads only these partners' deliveries, so only they are pulled."""
    path = sources_path(sources)
    if path is None:
        return Arrivals()
    declared = load_sources(path)
    if partners:
        declared = {p: s for p, s in declared.items() if p in partners}
    url = _warehouse_url(out, warehouse_url)
    _migrated(url)
    now = dt.datetime.now(dt.UTC)
    private_folder(landing)
    arrivals = {}
    for partner, source in declared.items():
        try:
            mode = _delivery_mode(partner, mappings)
            arrivals[partner] = pull_partner(source, Path(landing), Path(out), url, mode, now)
        except InfrastructureError as exc:  # this partner's drop; the others go on
            log.warning("partner %s: %s", partner, exc)
            arrivals[partner] = Arrival(
                partner=partner, state=UNREACHABLE, why=str(exc), source=source.where
            )
    return Arrivals(sources=str(path), partners=arrivals, deadline_passed=deadline_passed)


def clear_pulled(landing: str, out: str, url: str, now: dt.datetime | None = None) -> dict:
    """After a commit: delete the plain copies of pulled files the store has now ingested
    (their SHA-256 in delivery_file, the same content still in the landing folder), and the
    sealed copies whose retention ended; each deletion recorded in delivery_received.
    Counts of files deleted and kept."""
    import sqlalchemy as sa

    from ctdc_harmonizer.fileio import sha256_of
    from ctdc_harmonizer.warehouse.connection import warehouse
    from ctdc_harmonizer.warehouse.models import (
        Delivery,
        DeliveryFile,
        DeliveryReceived,
        ReportingEntity,
    )

    now = now or dt.datetime.now(dt.UTC)
    table = DeliveryReceived.__table__
    ingested = (
        sa.select(DeliveryFile.sha256)
        .join(Delivery, Delivery.id == DeliveryFile.delivery_id)
        .join(ReportingEntity, ReportingEntity.id == Delivery.entity_id)
        .where(ReportingEntity.code == table.c.partner, DeliveryFile.sha256 == table.c.sha256)
    )
    plain = sa.select(table.c.id, table.c.partner, table.c.file_name, table.c.sha256).where(
        table.c.landing_deleted_at.is_(None), sa.exists(ingested)
    )
    sealed = sa.select(table.c.id, table.c.partner, table.c.sha256, table.c.encrypted_until).where(
        table.c.encrypted_until.is_not(None), table.c.encrypted_deleted_at.is_(None)
    )
    counts = {"plain_deleted": 0, "sealed_deleted": 0, "sealed_kept": 0}
    with warehouse(url, "clearing pulled deliveries", write=True) as conn:
        for row_id, partner, name, sha in conn.execute(plain):
            path = Path(landing) / partner / name
            if path.is_file() and sha256_of(path) == sha:
                path.unlink()
                counts["plain_deleted"] += 1
                _remove_if_empty(path.parent)
            conn.execute(
                sa.update(table).where(table.c.id == row_id).values(landing_deleted_at=now)
            )
        for row_id, partner, sha, until in conn.execute(sealed):
            if isinstance(until, str):  # SQLite (ADBC) returns its text form
                until = dt.datetime.fromisoformat(until)
            until = until if until.tzinfo else until.replace(tzinfo=dt.UTC)  # stored as UTC
            if until > now:
                counts["sealed_kept"] += 1
                continue
            (Path(out) / SEALED_FOLDER / partner / f"{sha}.sealed").unlink(missing_ok=True)
            counts["sealed_deleted"] += 1
            conn.execute(
                sa.update(table).where(table.c.id == row_id).values(encrypted_deleted_at=now)
            )
    return counts


def pull_scheduled_deliveries(
    landing: str | None,
    out: str | None,
    deadline_passed: bool = False,
    partners: list[str] | None = None,
) -> Arrivals:
    """pull_deliveries with the DAG's defaults ($CTDC_LANDING / $CTDC_OUT, else under
    $AIRFLOW_HOME/ctdc/) and the sources file of $CTDC_SOURCES."""
    from ctdc_harmonizer.paths import default_landing, default_out

    return pull_deliveries(
        landing or default_landing(),
        out or default_out(),
        deadline_passed=deadline_passed,
        partners=partners or None,
    )
