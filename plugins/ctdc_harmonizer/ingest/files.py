"""Which files a partner delivered: the landing folder is a trust boundary.

No symbolic link below it is followed. A partner folder or a matching file that is a link
(wherever it points) is refused, so nothing is read from outside the folder the partners
deliver into. Errors name the partner and the file, never content.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

from ctdc_harmonizer.errors import ExtractError
from ctdc_harmonizer.ingest.withdrawals import is_withdrawals_file
from ctdc_harmonizer.mapping.spec import PartnerConfig
from ctdc_harmonizer.safety import os_reason

SYMLINK_PROBLEM = (
    "is a symbolic link: files are read only from inside the landing folder "
    "(copy the file in instead)"
)


def os_problem(exc: OSError) -> str:
    """An OS error as its errno name and the OS's words ('EACCES (Permission denied)'); its
    own text names absolute paths, and the message names the file already."""
    return os_reason(exc)


# Why a delivered entry is not read (mappings/README.md, "Files in a delivery"): reason codes
# in the run's output, reconciliation.json and metadata.json. A file that matches the
# partner's patterns is always read (and an error if it cannot be); these never are.
LOCK_FILE = "lock_file"  # ~$x.xlsx (Excel), .~lock.x# (LibreOffice): an editor has it open
HIDDEN_FILE = "hidden_file"  # .x: system or editor files, never a delivery
UNEXPECTED_FORMAT = "unexpected_format"  # a data file of another format (.ods beside .xlsx)
NOT_MATCHING = "not_matching_patterns"  # the partner's format, a name its patterns exclude
NOT_A_FILE = "not_a_file"  # a folder (its content is not read), a link, a pipe
ALREADY_INGESTED = "already_ingested"  # the store holds a file with the same SHA-256
ALREADY_APPLIED = "already_applied"  # a withdrawals file the store already applied
PARTNER_NOT_NAMED = "partner_not_named"  # the run names other partners only

# Suffixes of each reader format: a non-matching file with one of them is the partner's
# format under an unexpected name, any other is a file of an unexpected format.
FORMAT_SUFFIXES = {
    "excel": (".xlsx", ".xlsm"),
    "csv": (".csv", ".txt", ".tsv"),
    "jsonl": (".jsonl", ".ndjson", ".json"),
}


@dataclass(frozen=True)
class DeliveryListing:
    """A partner folder's entries: the files to read, and every other one with its reason."""

    files: list[Path]
    not_read: dict[str, str] = field(default_factory=dict)  # entry name -> reason code


def not_read_reason(config: PartnerConfig, path: Path) -> str | None:
    """Why an entry of the partner's folder is not read as an extract (None: it is read;
    the withdrawals file is handled apart)."""
    name = path.name
    if name.startswith(("~$", ".~lock.")):
        return LOCK_FILE
    if name.startswith("."):
        return HIDDEN_FILE
    if any(fnmatch.fnmatch(name, pattern) for pattern in config.reader.files):
        return None
    if path.is_symlink() or not path.is_file():
        return NOT_A_FILE
    if name.lower().endswith(FORMAT_SUFFIXES.get(config.reader.format, ())):
        return NOT_MATCHING
    return UNEXPECTED_FORMAT


def list_delivery(config: PartnerConfig, landing: Path) -> DeliveryListing:
    """The partner's delivered files in landing/<partner>/, in name order, and every other
    entry of the folder with the reason it is not read (nothing is left out unnamed).

    The landing folder is a trust boundary: no symbolic link below it is followed. A partner
    folder or a matching file that is a link (wherever it points) is refused, so nothing is
    read from outside the folder the partners deliver into.
    """
    folder = landing / config.code
    if folder.is_symlink():
        raise ExtractError(config.code, str(folder), SYMLINK_PROBLEM)
    if not folder.is_dir():
        raise ExtractError(config.code, str(folder), "landing folder for this partner not found")
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise ExtractError(
            config.code, str(folder), f"partner folder cannot be listed: {os_problem(exc)}"
        ) from None
    files, not_read = [], {}
    for p in entries:  # the files of one delivery, not records
        if is_withdrawals_file(p):
            continue
        reason = not_read_reason(config, p)
        if reason is not None:
            not_read[p.name] = reason
            continue
        if p.is_symlink():
            raise ExtractError(config.code, p.name, SYMLINK_PROBLEM)
        if not p.is_file():  # a folder or a pipe named like an extract: not skipped unseen
            raise ExtractError(config.code, p.name, "matches the file patterns but is not a file")
        files.append(p)
    if not files:
        patterns = ", ".join(config.reader.files)
        raise ExtractError(config.code, str(folder), f"no file matches {patterns}")
    return DeliveryListing(files, not_read)


def find_extract_files(config: PartnerConfig, landing: Path) -> list[Path]:
    """The partner's delivered files in landing/<partner>/, in name order (list_delivery)."""
    return list_delivery(config, landing).files
