"""Partner mapping folders: load, validate, and describe them.

A partner is described only by files in `mappings/<partner>/` (see mappings/README.md):
`partner.yaml` (mapping/partner_yaml.py: pydantic models), `fields.csv`, `values.csv` and the
optional `countries.csv` and `age_ranges.csv` (mapping/tables.py: pandera schemas). Every
problem found while loading is a MappingError naming the file, the line and the key or column;
mapping files are the team's own, so a message may quote them.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

from ctdc_harmonizer.codebook import Codebook, default_codebook
from ctdc_harmonizer.errors import MappingError
from ctdc_harmonizer.mapping.partner_yaml import DeriveModel, PartnerModel, parse_partner_yaml
from ctdc_harmonizer.mapping.spec import (
    PARTNER_FILE,
    DeliverySpec,
    DeriveSource,
    InclusionRule,
    PartnerConfig,
    ReaderSpec,
)
from ctdc_harmonizer.mapping.tables import (
    load_age_ranges,
    load_countries,
    load_fields,
    load_values,
)
from ctdc_harmonizer.paths import mappings_dir


def mapping_folder_hash(folder: Path) -> str:
    """Content hash of a mapping folder (file names and bytes), recorded in release metadata."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


HARMONIZATION_KEYS = ("null_values", "inclusion", "year_range", "derive", "coverage")
HARMONIZATION_TABLES = ("fields.csv", "values.csv", "countries.csv", "age_ranges.csv")


def harmonization_hash(folder: Path, model: PartnerModel) -> str:
    """Hash of what harmonization reads: the mapping tables and the partner.yaml keys that
    change a harmonized value (store: a change re-harmonizes the partner's history)."""
    digest = hashlib.sha256()
    settings = model.model_dump(mode="json", include=set(HARMONIZATION_KEYS))
    digest.update(json.dumps(settings, sort_keys=True).encode("utf-8"))
    for name in HARMONIZATION_TABLES:
        path = folder / name
        digest.update(f"\0{name}\0".encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _check_declared(model: PartnerModel, lines: dict[tuple, int], declared: set[str]) -> None:
    """Every field partner.yaml names is declared in fields.csv."""
    named: list[tuple[tuple, str, str]] = []  # (where, what, field)
    if model.record_id:
        named.append((("record_id",), "record_id field", model.record_id))
    for index, rule in enumerate(model.inclusion):
        named.append((("inclusion", index, "field"), "inclusion rule field", rule.field))
    for variable in DeriveModel.model_fields:
        for source in getattr(model.derive, variable):
            # Located at the variable, as the data officer reads derive: by variable.
            for name in (source.field, source.reference):
                if name:
                    named.append((("derive", variable), f"derive.{variable}: field", name))
    if model.withdrawals:
        for index, name in enumerate(model.withdrawals.match_on):
            named.append((("withdrawals", "match_on", index), "withdrawals.match_on field", name))
    if model.linkage:
        for index, name in enumerate(model.linkage.names):
            named.append((("linkage", "names", index), "linkage.names field", name))
        named.append((("linkage", "birthdate"), "linkage.birthdate field", model.linkage.birthdate))
    for where, what, name in named:
        if name not in declared:
            raise MappingError(
                PARTNER_FILE,
                f"{what} '{name}' is not declared in fields.csv",
                line=lines.get(where),
            )


def load_partner(folder: str | Path, codebook: Codebook | None = None) -> PartnerConfig:
    """Load and validate one partner's mapping folder.

    Each step of a run asks for its partner again; the folder is validated once per content
    (a changed file is a new content hash, so an edit is always seen)."""
    folder = Path(folder)
    config_path = folder / PARTNER_FILE
    if not config_path.exists():
        raise MappingError(str(config_path), "partner.yaml not found")
    try:
        content = mapping_folder_hash(folder)
    except OSError as exc:
        name = Path(exc.filename).name if exc.filename else str(folder)
        raise MappingError(name, f"cannot be read ({type(exc).__name__})") from None
    return _load_partner(folder, content, codebook or default_codebook())


@lru_cache(maxsize=64)
def _load_partner(folder: Path, content_hash: str, codebook: Codebook) -> PartnerConfig:
    config_path = folder / PARTNER_FILE
    model, lines = parse_partner_yaml(config_path)
    fields = load_fields(folder)
    _check_declared(model, lines, {f.name for f in fields})
    spec = model.reader
    reader = ReaderSpec(
        format=spec.format,
        files=tuple(spec.files),
        encoding=spec.encoding,
        sheet=spec.sheet,
        header_row=spec.header_row,
        data_start_row=spec.data_start_row or spec.header_row + 1,
        csv_delimiter=spec.csv_delimiter,
    )
    derive = {
        variable: tuple(
            DeriveSource(method=s.method, field=s.field, reference=s.reference or "")
            for s in getattr(model.derive, variable)
        )
        for variable in DeriveModel.model_fields
        if getattr(model.derive, variable)
    }
    return PartnerConfig(
        code=model.partner,
        name=model.name or model.partner,
        folder=folder,
        reader=reader,
        fields=fields,
        values=load_values(folder, fields, codebook),
        countries=load_countries(folder),
        age_ranges=load_age_ranges(folder),
        derive=derive,
        inclusion=tuple(
            InclusionRule(rule=r.rule, field=r.field, exclude=tuple(r.exclude))
            for r in model.inclusion
        ),
        record_id=model.record_id,
        withdrawal_match=tuple(model.withdrawals.match_on) if model.withdrawals else (),
        linkage_names=tuple(model.linkage.names) if model.linkage else (),
        linkage_birthdate=model.linkage.birthdate if model.linkage else "",
        null_values=tuple(model.null_values),
        year_min=model.year_range.min,
        year_max=model.year_range.max,
        coverage_threshold=model.coverage.threshold,
        unmapped_min_rows=model.coverage.report_min_rows,
        datasource=model.datasource,
        mapping_hash=content_hash,
        harmonization_hash=harmonization_hash(folder, model),
        delivery=DeliverySpec(**model.delivery.model_dump()),
    )


def available_partners(root: str | Path | None = None) -> list[str]:
    root = Path(root) if root else mappings_dir()
    return sorted(p.name for p in root.iterdir() if (p / PARTNER_FILE).exists())
