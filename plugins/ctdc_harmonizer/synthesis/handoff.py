"""The hand-off contract between the annual update and the synthesis.

`<out>/handoff/<release>/` (next to the release folder, not inside it: the release folder's
content hash stays what the warehouse recorded) holds exactly two files:

- `harmonized.parquet`: the 27 codebook columns in codebook order (no partner or file column);
- `manifest.json`: release label, codebook version and hash, row count, columns, the SHA-256
  of every other file of the folder, and each contributing partner's mapping hash.

The synthesis side trusts nothing else: `verify_handoff` re-hashes the files, re-reads the
columns and compares the release label with the one the triggering asset event named.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from ctdc_harmonizer.codebook import default_codebook
from ctdc_harmonizer.errors import CtdcError
from ctdc_harmonizer.fileio import sha256_of

HANDOFF_DIR = "handoff"
TABLE_FILE = "harmonized.parquet"
MANIFEST_FILE = "manifest.json"
CONTRACT = "ctdc-handoff/1"


class HandoffError(CtdcError):
    """The hand-off folder does not honour its contract (names the file and the reason)."""


@dataclass(frozen=True)
class VerifiedHandoff:
    release: str
    folder: Path
    table: Path
    rows: int
    manifest: dict
    manifest_sha256: str


def handoff_dir(out: str | Path, release: str) -> Path:
    """Where the hand-off of `release` lives: `<out>/handoff/<release>`."""
    return Path(out) / HANDOFF_DIR / release


def write_handoff(release_dir: str | Path) -> dict:
    """Write `<out>/handoff/<release>/` from the release folder `<out>/<release>` (atomically:
    write aside, rename).

    No timestamp in the manifest: the same release gives the same hand-off, byte for byte.
    """
    release_dir = Path(release_dir)
    target = handoff_dir(release_dir.parent, release_dir.name)
    codebook = default_codebook()
    meta = json.loads((release_dir / "metadata.json").read_text(encoding="utf-8"))
    columns = pq.read_schema(release_dir / TABLE_FILE).names
    if columns != codebook.columns:
        raise HandoffError(
            f"{release_dir / TABLE_FILE}: columns are not the {len(codebook.columns)} codebook "
            "columns in codebook order; not handing it off"
        )
    staging = target.parent / f".{release_dir.name}.tmp"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    shutil.copyfile(release_dir / TABLE_FILE, staging / TABLE_FILE)
    rows = pq.read_metadata(staging / TABLE_FILE).num_rows
    manifest = {
        "contract": CONTRACT,
        "release": meta["release"],
        "release_year": meta["release_year"],
        "codebook": {k: meta["codebook"][k] for k in ("title", "version", "file", "sha256")},
        "rows": rows,
        "columns": codebook.columns,
        "files": {TABLE_FILE: sha256_of(staging / TABLE_FILE)},
        "mappings": {p: e["mapping_sha256"] for p, e in sorted(meta["partners"].items())},
    }
    (staging / MANIFEST_FILE).write_text(
        json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8"
    )
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return {
        "release": manifest["release"],
        "rows": rows,
        "handoff": str(target.resolve()),
        "manifest_sha256": sha256_of(target / MANIFEST_FILE),
    }


def verify_handoff(
    folder: str | Path, release: str, expected_manifest_sha256: str | None = None
) -> VerifiedHandoff:
    """Check the folder against its manifest, the codebook and the release named by the caller.

    Reads only schema and row count from the Parquet file after hashing it (no value is read
    into a message). Raises HandoffError naming the file and the reason.
    """
    folder = Path(folder)
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        raise HandoffError(f"{folder}: no {MANIFEST_FILE}; not a hand-off folder")
    manifest_sha = sha256_of(manifest_path)
    if expected_manifest_sha256 and manifest_sha != expected_manifest_sha256:
        raise HandoffError(
            f"{manifest_path}: SHA-256 differs from the one the triggering asset event carries"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise HandoffError(f"{manifest_path}: not valid JSON") from None
    if not isinstance(manifest, dict) or manifest.get("contract") != CONTRACT:
        raise HandoffError(f"{manifest_path}: not a {CONTRACT} manifest")
    if manifest.get("release") != release:
        raise HandoffError(
            f"{manifest_path}: the hand-off is of another release than the one requested "
            f"('{release}')"
        )
    listed = set(manifest.get("files", {}))
    present = {p.name for p in folder.iterdir()} - {MANIFEST_FILE}
    if present != listed or TABLE_FILE not in listed:
        extra, missing = sorted(present - listed), sorted(listed - present)
        raise HandoffError(
            f"{folder}: files differ from the manifest (unlisted: {extra}, missing: {missing})"
        )
    for name, digest in manifest["files"].items():
        if sha256_of(folder / name) != digest:
            raise HandoffError(f"{folder / name}: SHA-256 does not match the manifest")
    codebook = default_codebook()
    codebook_sha = hashlib.sha256(Path(codebook.source_path).read_bytes()).hexdigest()
    if manifest.get("codebook", {}).get("sha256") != codebook_sha:
        raise HandoffError(f"{manifest_path}: made with another codebook file than this one")
    table = folder / TABLE_FILE
    try:
        columns = pq.read_schema(table).names
        rows = pq.read_metadata(table).num_rows
    except Exception as exc:  # pyarrow's message may quote file content
        raise HandoffError(f"{table}: not a readable Parquet file ({type(exc).__name__})") from None
    if columns != codebook.columns or manifest.get("columns") != codebook.columns:
        unknown = sorted(set(columns) - set(codebook.columns))
        missing = sorted(set(codebook.columns) - set(columns))
        raise HandoffError(
            f"{table}: columns differ from the codebook v{codebook.version} "
            f"(missing: {missing}; {len(unknown)} column(s) not in the codebook; or out of order)"
        )
    if rows != manifest.get("rows"):
        raise HandoffError(f"{table}: {rows} rows, the manifest says {manifest.get('rows')}")
    return VerifiedHandoff(release, folder, table, rows, manifest, manifest_sha)


def read_table(handoff: VerifiedHandoff) -> pd.DataFrame:
    return pd.read_parquet(handoff.table)
