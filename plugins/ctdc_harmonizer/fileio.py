"""Small file helpers every stage uses: checksums, JSON files, owner-only folders."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def sha256_of(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in blocks (the checksum every manifest records)."""
    with Path(path).open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def write_json(path: str | Path, payload: Any) -> None:
    """Indented, keys sorted: the same payload always gives the same bytes."""
    Path(path).write_text(json.dumps(payload, indent=2, sort_keys=True), encoding="utf-8")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def private_folder(path: str | Path) -> Path:
    """Create path (and parents) readable by the pipeline's user only."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    return path
