"""Where each partner's deliveries arrive: a deployment's `sources.yaml` (data, no secrets).

The file is the deployment's, not the mapping's: the same mapping serves a test and a
production deployment whose partners deliver to different places. Its path is
$CTDC_SOURCES (the DAG and the command line read the same variable; `ctdc pull --sources`
overrides it). No sources file: nothing is pulled, the landing folder is read as before.

    defaults:                    # optional, for every partner below
      complete: manifest         # manifest | stability
      stability_seconds: 600     # a file unchanged (size and mtime) this long is complete
      keep_encrypted_days: 0     # 0: the pulled copy is deleted once the release is committed
    partners:
      hotline:
        kind: sftp               # local | sftp | object_store
        conn_id: ctdc_sftp_hotline
        path: /upload/ctdc        # the partner's drop
        outbox: /download/ctdc    # where its receipts go (optional)
      iom:
        kind: object_store
        conn_id: ctdc_s3_iom
        path: s3://partner-iom/ctdc/inbox
        outbox: s3://partner-iom/ctdc/receipts

A source names an Airflow connection id, never a host's password or a key: credentials live
in Airflow's connections and secrets backend (the command line: $AIRFLOW_CONN_<ID>). A URL
or path holding credentials (user:password@) is refused, so none reaches a plan or a log.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ctdc_harmonizer.errors import MappingError
from ctdc_harmonizer.fileio import load_yaml

SOURCES_ENV = "CTDC_SOURCES"
LOCAL, SFTP, OBJECT_STORE = "local", "sftp", "object_store"
MANIFEST, STABILITY = "manifest", "stability"
MANIFEST_NAME = "datapackage.json"  # frictionless data package: written by the partner LAST
CONN_ID = re.compile(r"[A-Za-z0-9_.-]{1,200}")
CREDENTIALS_IN_URL = re.compile(r"^[a-z0-9+.-]+://[^/@]*@", re.IGNORECASE)


class Defaults(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    complete: Literal["manifest", "stability"] = MANIFEST
    stability_seconds: int = Field(600, ge=0)
    keep_encrypted_days: int = Field(0, ge=0)


class Source(BaseModel):
    """One partner's drop (module docstring). `outbox`: where its receipts are written."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    partner: str
    kind: Literal["local", "sftp", "object_store"]
    path: str
    conn_id: str | None = None
    outbox: str | None = None
    complete: Literal["manifest", "stability"] = MANIFEST
    stability_seconds: int = Field(600, ge=0)
    keep_encrypted_days: int = Field(0, ge=0)

    @field_validator("path", "outbox")
    @classmethod
    def _no_credentials(cls, value: str | None) -> str | None:
        if value is not None and CREDENTIALS_IN_URL.match(value):
            # The message does not repeat the value: it holds a secret.
            raise ValueError("holds credentials (user@ or user:password@): use conn_id")
        return value

    @field_validator("conn_id")
    @classmethod
    def _conn_id(cls, value: str | None) -> str | None:
        if value is not None and not CONN_ID.fullmatch(value):
            raise ValueError("must be an Airflow connection id (letters, digits, _ . -)")
        return value

    @property
    def where(self) -> str:
        """The source as recorded and logged: kind, connection id and path (no secret)."""
        via = f" via {self.conn_id}" if self.conn_id else ""
        return f"{self.kind}{via}:{self.path}"


def sources_path(given: str | None = None) -> Path | None:
    """The sources file named by the caller, else $CTDC_SOURCES, else none."""
    text = (given or os.environ.get(SOURCES_ENV, "")).strip()
    return Path(text) if text else None


def load_sources(path: str | Path) -> dict[str, Source]:
    """Every partner's source, by partner; MappingError naming the file and entry when wrong."""
    path = Path(path)
    name = str(path)
    try:
        raw = load_yaml(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise MappingError(name, f"cannot be read ({type(exc).__name__})") from None
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        raise MappingError(
            name, "is not valid YAML", line=None if line is None else line + 1
        ) from None
    if not isinstance(raw, dict) or not isinstance(raw.get("partners"), dict):
        raise MappingError(name, "needs a mapping `partners:` of partner -> source")
    extra = sorted(set(raw) - {"defaults", "partners"})
    if extra:
        raise MappingError(name, f"unknown key(s) {', '.join(extra)} (defaults, partners)")
    try:
        defaults = Defaults.model_validate(raw.get("defaults") or {})
    except ValidationError as exc:
        raise MappingError(name, _problems(exc), column="defaults") from None
    sources = {}
    for partner, entry in raw["partners"].items():
        if not isinstance(entry, dict):
            raise MappingError(name, "must be a mapping (kind, path, ...)", column=str(partner))
        try:
            source = Source.model_validate(
                {**defaults.model_dump(), **entry, "partner": str(partner)}
            )
        except ValidationError as exc:
            raise MappingError(name, _problems(exc), column=str(partner)) from None
        if source.kind != LOCAL and not source.conn_id:
            raise MappingError(name, f"a {source.kind} source needs conn_id", column=partner)
        sources[str(partner)] = source
    return sources


def _problems(exc: ValidationError) -> str:
    """Pydantic's errors by field and message, without the input value it would quote."""
    return "; ".join(
        f"{'.'.join(str(p) for p in error['loc']) or 'entry'}: {error['msg']}"
        for error in exc.errors(include_input=False, include_url=False)
    )
