"""Which files a partner delivered: the landing folder is a trust boundary.

No symbolic link below it is followed. A partner folder or a matching file that is a link
(wherever it points) is refused, so nothing is read from outside the folder the partners
deliver into. Errors name the partner and the file, never content.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

from ctdc_harmonizer.errors import ExtractError
from ctdc_harmonizer.ingest.withdrawals import is_withdrawals_file
from ctdc_harmonizer.mapping.spec import PartnerConfig

SYMLINK_PROBLEM = (
    "is a symbolic link: files are read only from inside the landing folder "
    "(copy the file in instead)"
)


def os_problem(exc: OSError) -> str:
    """An OS error in a few words (its own text names paths; keep messages short)."""
    if isinstance(exc, PermissionError):
        return "permission denied"
    return type(exc).__name__


def find_extract_files(config: PartnerConfig, landing: Path) -> list[Path]:
    """The partner's delivered files in landing/<partner>/, in name order.

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
            config.code, str(folder), f"partner folder cannot be listed ({os_problem(exc)})"
        ) from None
    files = []
    for p in entries:  # the files of one delivery, not records
        if (
            is_withdrawals_file(p)
            or p.name.startswith(("~$", "."))  # Office lock files, hidden files
            or not any(fnmatch.fnmatch(p.name, pattern) for pattern in config.reader.files)
        ):
            continue
        if p.is_symlink():
            raise ExtractError(config.code, p.name, SYMLINK_PROBLEM)
        if not p.is_file():  # a folder or a pipe named like an extract: not skipped unseen
            raise ExtractError(config.code, p.name, "matches the file patterns but is not a file")
        files.append(p)
    if not files:
        patterns = ", ".join(config.reader.files)
        raise ExtractError(config.code, str(folder), f"no file matches {patterns}")
    return files
