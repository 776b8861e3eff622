"""When is a delivery complete? Two conventions, chosen per partner in the sources file.

**manifest** (the default): the partner uploads its files, then, LAST, a frictionless data
package descriptor `datapackage.json` naming each file and its SHA-256:

    {"name": "hotline-2025", "resources": [
        {"name": "cases", "path": "cases_2025.csv", "bytes": 123456,
         "hash": "sha256:<64 hex digits>"}]}

Until the descriptor is there, or while a file it names is missing or shorter than its
`bytes`, the delivery is *waiting*. A file whose content does not hash to its declared
SHA-256 once copied is *refused* (a located error, never read). Before the next delivery the
partner deletes (or replaces, as its last upload) the descriptor.

**stability**, for partners who cannot write one: every file of the drop is complete once
neither its size nor its modification time has changed for `stability_seconds` (default
600), checked again after the copy: a file that moved during the copy is not kept.

Only names, sizes, times and checksums are read here; never a file's content.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from ctdc_harmonizer.deliveries.remote import Entry
from ctdc_harmonizer.deliveries.sources import MANIFEST, MANIFEST_NAME, Source

SHA256 = re.compile(r"(?:sha256:)?([0-9a-fA-F]{64})")
PLAIN_NAME = re.compile(r"[^/\\]+")


@dataclass(frozen=True)
class Expected:
    """A file the delivery consists of; sha256 None: not declared (stability convention)."""

    name: str
    size: int
    mtime: float
    sha256: str | None = None


@dataclass
class Readiness:
    """A drop's state: complete (its files), waiting (why), or refused (why: a located
    problem the partner must fix)."""

    partner: str
    files: list[Expected] = field(default_factory=list)
    waiting: str = ""
    refused: str = ""

    @property
    def complete(self) -> bool:
        return not self.waiting and not self.refused and bool(self.files)


def parse_manifest(partner: str, text: bytes) -> tuple[list[dict], str]:
    """The descriptor's resources as (path, sha256, bytes) dicts, or a value-free problem."""
    try:
        package = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return [], f"{MANIFEST_NAME} is not valid JSON"
    resources = package.get("resources") if isinstance(package, dict) else None
    if not isinstance(resources, list) or not resources:
        return [], f"{MANIFEST_NAME} has no resources[] list"
    declared = []
    for number, resource in enumerate(resources, start=1):
        where = f"{MANIFEST_NAME}, resource {number}"
        if not isinstance(resource, dict):
            return [], f"{where}: not an object"
        path, digest = resource.get("path"), resource.get("hash")
        if not isinstance(path, str) or not PLAIN_NAME.fullmatch(path) or path == MANIFEST_NAME:
            return [], f"{where}: `path` must be a file name in the same folder"
        found = SHA256.fullmatch(digest) if isinstance(digest, str) else None
        if found is None:
            return [], f"{where}: `hash` must be 'sha256:' and 64 hex digits"
        size = resource.get("bytes")
        if size is not None and (not isinstance(size, int) or size < 0):
            return [], f"{where}: `bytes` must be a whole number"
        declared.append({"path": path, "sha256": found.group(1).lower(), "bytes": size})
    names = [d["path"] for d in declared]
    if len(set(names)) != len(names):
        return [], f"{MANIFEST_NAME} names a file twice"
    return declared, ""


def by_manifest(source: Source, listed: dict[str, Entry], manifest: bytes | None) -> Readiness:
    ready = Readiness(source.partner)
    if manifest is None:
        ready.waiting = f"no {MANIFEST_NAME} yet (the partner writes it last)"
        return ready
    declared, problem = parse_manifest(source.partner, manifest)
    if problem:
        ready.refused = problem
        return ready
    for item in declared:
        entry = listed.get(item["path"])
        if entry is None:
            ready.waiting = f"file '{item['path']}' named in {MANIFEST_NAME} not there yet"
            return ready
        if item["bytes"] is not None and entry.size < item["bytes"]:
            ready.waiting = f"file '{item['path']}' shorter than {MANIFEST_NAME} declares"
            return ready
        if item["bytes"] is not None and entry.size > item["bytes"]:
            ready.refused = f"file '{item['path']}': larger than {MANIFEST_NAME} declares"
            return ready
        ready.files.append(Expected(entry.name, entry.size, entry.mtime, item["sha256"]))
    return ready


def by_stability(source: Source, listed: dict[str, Entry], now: float | None = None) -> Readiness:
    ready = Readiness(source.partner)
    now = time.time() if now is None else now
    for entry in sorted(listed.values(), key=lambda e: e.name):
        if entry.name == MANIFEST_NAME:
            continue
        if now - entry.mtime < source.stability_seconds:
            ready.waiting = (
                f"file '{entry.name}' changed less than {source.stability_seconds} s ago"
            )
            ready.files = []
            return ready
        ready.files.append(Expected(entry.name, entry.size, entry.mtime))
    if not ready.files:
        ready.waiting = "no file in the drop"
    return ready


def readiness(source: Source, listed: dict[str, Entry], manifest: bytes | None) -> Readiness:
    if source.complete == MANIFEST:
        return by_manifest(source, listed, manifest)
    return by_stability(source, listed)


def write_manifest(folder: str | Path, name: str = "delivery") -> Path:
    """What a partner runs last, after uploading or before sending (`ctdc manifest FOLDER`):
    `datapackage.json` naming every file of the folder with its size and SHA-256. Written
    aside, then renamed: a reader never sees half a manifest."""
    import os

    from ctdc_harmonizer.fileio import sha256_of

    folder = Path(folder)
    resources = [
        {
            "name": re.sub(r"[^a-z0-9._-]", "-", path.stem.lower()) or "file",
            "path": path.name,
            "bytes": path.stat().st_size,
            "hash": f"sha256:{sha256_of(path)}",
        }
        for path in sorted(folder.iterdir())
        if path.is_file() and not path.name.startswith(".") and path.name != MANIFEST_NAME
    ]
    package = {"name": re.sub(r"[^a-z0-9._-]", "-", name.lower()), "resources": resources}
    part = folder / f".{MANIFEST_NAME}.part"
    part.write_text(json.dumps(package, indent=2) + "\n", encoding="utf-8")
    os.replace(part, folder / MANIFEST_NAME)
    return folder / MANIFEST_NAME
