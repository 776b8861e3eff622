"""Partner mapping folders: load, validate, and describe them.

A partner is described only by files in `mappings/<partner>/` (see
mappings/README.md): `partner.yaml`, `fields.csv`, `values.csv` and the optional
`countries.csv` and `age_ranges.csv`. Every problem found while loading is a
MappingError naming the file, the line and the column.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from ctdc_harmonizer.codebook import Codebook, default_codebook, iso3_codes
from ctdc_harmonizer.errors import MappingError
from ctdc_harmonizer.paths import mappings_dir
from ctdc_harmonizer.text import normalize_series

PARTNER_FILE = "partner.yaml"
FIELDS_FILE = "fields.csv"
VALUES_FILE = "values.csv"
COUNTRIES_FILE = "countries.csv"
AGE_RANGES_FILE = "age_ranges.csv"

# Roles a source field can play. Identifier and free-text fields never leave the reader.
ROLES = {
    "identifier": "direct identifier (name, phone, e-mail, address, case-worker): dropped on read",
    "free_text": "free-text note: dropped on read",
    "record_id": "the partner's case id: used for withdrawals and duplicates, then dropped",
    "date": "a date: turned into a year (or an age) on read, never kept as a date",
    "coded": "a coded value (picklist, flag): mapped through values.csv",
    "country": "a country name or ISO code: normalized to ISO 3166-1 alpha-3",
    "number": "a number (age in years, months)",
    "age_range": "an age range label: mapped through age_ranges.csv",
    "ignored": "known and not used: dropped on read",
}
KEPT_ROLES = {"date", "coded", "country", "number", "age_range"}
MATCH_TYPES = {"exact", "broader", "narrower", "approximate", "unmappable"}
READER_FORMATS = {"excel", "csv", "jsonl"}
DERIVE_METHODS = {
    "yearOfRegistration": {"date", "year"},
    "ageBroad": {"age_years", "birthdate", "age_range", "codebook"},
    "citizenship": {"country"},
    "CountryOfExploitation": {"country"},
    "traffickMonths": {"months", "codebook"},
}
FIELDS_COLUMNS = ["field", "role", "delimiter", "format", "description"]
VALUES_COLUMNS = ["field", "source_value", "variable", "value", "match", "note"]
COUNTRIES_COLUMNS = ["source_value", "iso3", "match", "note"]
AGE_RANGES_COLUMNS = ["source_value", "min_age", "max_age", "note"]


@dataclass(frozen=True)
class FieldSpec:
    name: str
    role: str
    delimiter: str = ""
    format: str = ""
    required: bool = True

    @property
    def multi(self) -> bool:
        return bool(self.delimiter)


@dataclass(frozen=True)
class DeriveSource:
    method: str
    field: str
    reference: str = ""  # for birthdate: the date the age is taken at


@dataclass(frozen=True)
class InclusionRule:
    rule: str
    field: str
    exclude: tuple[str, ...]


@dataclass(frozen=True)
class ReaderSpec:
    format: str
    files: tuple[str, ...]
    encoding: str = "utf-8"
    sheet: str | int = 0
    header_row: int = 1
    data_start_row: int = 2
    csv_delimiter: str = ","


@dataclass(frozen=True)
class PartnerConfig:
    code: str
    name: str
    folder: Path
    reader: ReaderSpec
    fields: tuple[FieldSpec, ...]
    values: pd.DataFrame  # field, key, variable, value, match, note, line
    countries: pd.DataFrame  # key, iso3, line
    age_ranges: pd.DataFrame  # key, min_age, max_age, line
    derive: dict[str, tuple[DeriveSource, ...]]
    inclusion: tuple[InclusionRule, ...] = ()
    record_id: str = ""
    null_values: tuple[str, ...] = ("",)
    year_min: int | None = None
    year_max: int | None = None
    coverage_threshold: float = 0.0
    datasource: str = ""
    mapping_hash: str = ""
    extra: dict = field(default_factory=dict)

    def field(self, name: str) -> FieldSpec:
        return next(f for f in self.fields if f.name == name)

    def fields_with_role(self, *roles: str) -> list[FieldSpec]:
        return [f for f in self.fields if f.role in roles]

    @property
    def kept_fields(self) -> list[str]:
        return [f.name for f in self.fields if f.role in KEPT_ROLES]

    @property
    def coded_fields(self) -> list[str]:
        """Fields whose values are categories (safe to list in reports)."""
        return [f.name for f in self.fields if f.role in {"coded", "country", "age_range"}]


def _read_table(path: Path, columns: list[str], required: list[str]) -> pd.DataFrame:
    """A mapping CSV as strings, with `line` = its line number in the file."""
    if not path.exists():
        raise MappingError(path.name, f"file not found in {path.parent}")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise MappingError(path.name, f"not a readable UTF-8 CSV ({type(exc).__name__})") from exc
    table.columns = [c.strip() for c in table.columns]
    for col in required:
        if col not in table.columns:
            raise MappingError(path.name, "required column is missing", line=1, column=col)
    for col in columns:
        if col not in table.columns:
            table[col] = ""
    table = table[columns].apply(lambda s: s.str.strip())
    table.insert(len(columns), "line", range(2, len(table) + 2))
    return table


def _require(raw: dict, key: str, file: str, where: str = "") -> object:
    if not isinstance(raw, dict) or key not in raw or raw[key] in (None, ""):
        raise MappingError(file, f"required key '{where}{key}' is missing")
    return raw[key]


def _yaml_line(text: str, key: str) -> int | None:
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip().startswith(f"{key}:") or line.strip().startswith(f"- {key}:"):
            return number
    return None


def mapping_folder_hash(folder: Path) -> str:
    """Content hash of a mapping folder (file names and bytes), recorded in release metadata."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def _load_fields(folder: Path) -> tuple[FieldSpec, ...]:
    table = _read_table(folder / FIELDS_FILE, FIELDS_COLUMNS + ["required"], ["field", "role"])
    specs = []
    seen: set[str] = set()
    for row in table.itertuples(index=False):  # a mapping table: tens of rows, not records
        if not row.field:
            raise MappingError(FIELDS_FILE, "field name is empty", line=row.line, column="field")
        if row.field in seen:
            raise MappingError(FIELDS_FILE, "field is listed twice", line=row.line, column="field")
        if row.role not in ROLES:
            raise MappingError(
                FIELDS_FILE,
                f"unknown role '{row.role}' (allowed: {', '.join(sorted(ROLES))})",
                line=row.line,
                column="role",
            )
        seen.add(row.field)
        specs.append(
            FieldSpec(
                name=row.field,
                role=row.role,
                delimiter=row.delimiter,
                format=row.format,
                required=row.required.lower() not in {"no", "false", "0"},
            )
        )
    return tuple(specs)


def _load_values(folder: Path, fields: tuple[FieldSpec, ...], codebook: Codebook) -> pd.DataFrame:
    path = folder / VALUES_FILE
    if not path.exists():
        return pd.DataFrame(columns=["field", "key", "variable", "value", "match", "note", "line"])
    table = _read_table(path, VALUES_COLUMNS, ["field", "source_value", "variable", "value"])
    coded = {f.name for f in fields if f.role == "coded"}
    for row in table.itertuples(index=False):
        if row.field not in coded:
            raise MappingError(
                VALUES_FILE,
                "field is not declared with role 'coded' in fields.csv",
                line=row.line,
                column="field",
            )
        if not row.match:  # every row is a reviewed decision; template rows have none yet
            raise MappingError(
                VALUES_FILE,
                "match type is empty: review the row (exact, broader, narrower, approximate, "
                "unmappable)",
                line=row.line,
                column="match",
            )
        if row.match not in MATCH_TYPES:
            raise MappingError(
                VALUES_FILE,
                f"unknown match type '{row.match}' (allowed: {', '.join(sorted(MATCH_TYPES))})",
                line=row.line,
                column="match",
            )
        if not row.variable:  # known value that feeds no v3 variable (e.g. 'Other')
            if row.value:
                raise MappingError(
                    VALUES_FILE,
                    "a value is given without a variable",
                    line=row.line,
                    column="value",
                )
            continue
        if not codebook.has_variable(row.variable):
            raise MappingError(
                VALUES_FILE,
                f"'{row.variable}' is not a codebook v3 variable",
                line=row.line,
                column="variable",
            )
        var = codebook.variable(row.variable)
        if var.name in DERIVE_METHODS:
            raise MappingError(
                VALUES_FILE,
                f"'{var.name}' is derived (partner.yaml derive:), not value-mapped",
                line=row.line,
                column="variable",
            )
        if codebook.canonical(var.name, row.value) is None:
            raise MappingError(
                VALUES_FILE,
                f"'{row.value}' is not an allowed value of {var.name}",
                line=row.line,
                column="value",
            )
    table["variable"] = table["variable"].map(lambda v: codebook.variable(v).name if v else "")
    table["value"] = [
        codebook.canonical(var, val) if var else ""
        for var, val in zip(table["variable"], table["value"], strict=True)
    ]
    table["key"] = normalize_series(table["source_value"])
    _check_conflicts(table)
    return table[["field", "key", "variable", "value", "match", "note", "line"]]


def _check_conflicts(table: pd.DataFrame) -> None:
    """One source value may feed several variables, but one variable only one way."""
    mapped = table[table["variable"] != ""]
    grouped = mapped.groupby(["field", "key", "variable"])["value"].nunique()
    conflicts = grouped[grouped > 1]
    if not conflicts.empty:
        field_name, key, variable = conflicts.index[0]
        rows = mapped[
            (mapped["field"] == field_name)
            & (mapped["key"] == key)
            & (mapped["variable"] == variable)
        ]
        raise MappingError(
            VALUES_FILE,
            f"source value is mapped to conflicting values of {variable} "
            f"(also on line {int(rows['line'].iloc[0])})",
            line=int(rows["line"].iloc[-1]),
            column="value",
        )
    # A value both mapped and declared as feeding nothing is ambiguous too.
    blank = table[table["variable"] == ""][["field", "key", "line"]]
    both = blank.merge(mapped[["field", "key", "line"]], on=["field", "key"], suffixes=("", "_m"))
    if not both.empty:
        raise MappingError(
            VALUES_FILE,
            f"source value is mapped on line {int(both['line_m'].iloc[0])} and to nothing here",
            line=int(both["line"].iloc[0]),
            column="variable",
        )


def _load_countries(folder: Path) -> pd.DataFrame:
    path = folder / COUNTRIES_FILE
    if not path.exists():
        return pd.DataFrame(columns=["key", "iso3", "line"])
    table = _read_table(path, COUNTRIES_COLUMNS, ["source_value", "iso3"])
    codes = iso3_codes()
    for row in table.itertuples(index=False):
        if not row.match:
            raise MappingError(
                COUNTRIES_FILE, "match type is empty: review the row", line=row.line, column="match"
            )
        if row.iso3 and row.iso3 not in codes:
            raise MappingError(
                COUNTRIES_FILE,
                f"'{row.iso3}' is not an ISO 3166-1 alpha-3 code",
                line=row.line,
                column="iso3",
            )
    table["key"] = normalize_series(table["source_value"])
    dupes = table[table.duplicated("key", keep="first")]
    if not dupes.empty:
        raise MappingError(
            COUNTRIES_FILE,
            "source value is listed twice",
            line=int(dupes["line"].iloc[0]),
            column="source_value",
        )
    return table[["key", "iso3", "line"]]


def _load_age_ranges(folder: Path) -> pd.DataFrame:
    path = folder / AGE_RANGES_FILE
    if not path.exists():
        return pd.DataFrame(columns=["key", "min_age", "max_age", "line"])
    table = _read_table(path, AGE_RANGES_COLUMNS, ["source_value", "min_age", "max_age"])
    for col in ("min_age", "max_age"):
        numbers = pd.to_numeric(table[col].replace("", None), errors="coerce")
        bad = table[(numbers.isna() & (table[col] != "")) | (numbers < 0)]
        if not bad.empty:
            raise MappingError(
                AGE_RANGES_FILE,
                "not a whole number of years",
                line=int(bad["line"].iloc[0]),
                column=col,
            )
        table[col] = numbers
    missing_min = table[table["min_age"].isna()]
    if not missing_min.empty:
        raise MappingError(
            AGE_RANGES_FILE,
            "min_age is required",
            line=int(missing_min["line"].iloc[0]),
            column="min_age",
        )
    table["key"] = normalize_series(table["source_value"])
    return table[["key", "min_age", "max_age", "line"]]


def _load_derive(
    raw: dict, text: str, fields: tuple[FieldSpec, ...]
) -> dict[str, tuple[DeriveSource, ...]]:
    declared = {f.name: f for f in fields}
    derive: dict[str, tuple[DeriveSource, ...]] = {}
    for variable, sources in (raw.get("derive") or {}).items():
        line = _yaml_line(text, variable)
        if variable not in DERIVE_METHODS:
            raise MappingError(
                PARTNER_FILE,
                f"'{variable}' cannot be derived (allowed: {', '.join(DERIVE_METHODS)})",
                line=line,
            )
        parsed = []
        for source in sources or []:
            method = source.get("method", "")
            if method not in DERIVE_METHODS[variable]:
                raise MappingError(
                    PARTNER_FILE,
                    f"derive.{variable}: method '{method}' not allowed "
                    f"(allowed: {', '.join(sorted(DERIVE_METHODS[variable]))})",
                    line=line,
                )
            for key in ("field", "reference"):
                name = source.get(key)
                if name and name not in declared:
                    raise MappingError(
                        PARTNER_FILE,
                        f"derive.{variable}: field '{name}' is not declared in fields.csv",
                        line=line,
                    )
            if not source.get("field"):
                raise MappingError(
                    PARTNER_FILE, f"derive.{variable}: required key 'field' is missing", line=line
                )
            if method == "birthdate" and not source.get("reference"):
                raise MappingError(
                    PARTNER_FILE,
                    f"derive.{variable}: method birthdate needs 'reference'",
                    line=line,
                )
            parsed.append(
                DeriveSource(
                    method=method, field=source["field"], reference=source.get("reference", "")
                )
            )
        derive[variable] = tuple(parsed)
    if not derive.get("yearOfRegistration"):
        raise MappingError(PARTNER_FILE, "required key 'derive.yearOfRegistration' is missing")
    return derive


def load_partner(folder: str | Path, codebook: Codebook | None = None) -> PartnerConfig:
    """Load and validate one partner's mapping folder."""
    folder = Path(folder)
    codebook = codebook or default_codebook()
    config_path = folder / PARTNER_FILE
    if not config_path.exists():
        raise MappingError(str(config_path), "partner.yaml not found")
    text = config_path.read_text(encoding="utf-8")
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise MappingError(
            PARTNER_FILE, "not valid YAML", line=mark.line + 1 if mark else None
        ) from exc
    code = str(_require(raw, "partner", PARTNER_FILE))
    reader_raw = _require(raw, "reader", PARTNER_FILE)
    reader_format = str(_require(reader_raw, "format", PARTNER_FILE, "reader."))
    if reader_format not in READER_FORMATS:
        raise MappingError(
            PARTNER_FILE,
            f"reader.format must be one of {sorted(READER_FORMATS)}",
            line=_yaml_line(text, "format"),
        )
    files = _require(reader_raw, "files", PARTNER_FILE, "reader.")
    reader = ReaderSpec(
        format=reader_format,
        files=tuple([files] if isinstance(files, str) else files),
        encoding=reader_raw.get("encoding", "utf-8"),
        sheet=reader_raw.get("sheet", 0),
        header_row=int(reader_raw.get("header_row", 1)),
        data_start_row=int(
            reader_raw.get("data_start_row", int(reader_raw.get("header_row", 1)) + 1)
        ),
        csv_delimiter=reader_raw.get("csv_delimiter", ","),
    )
    fields = _load_fields(folder)
    declared = {f.name for f in fields}
    record_id = str(raw.get("record_id") or "")
    if record_id and record_id not in declared:
        raise MappingError(
            PARTNER_FILE,
            f"record_id field '{record_id}' is not declared in fields.csv",
            line=_yaml_line(text, "record_id"),
        )
    rules = []
    for rule in raw.get("inclusion") or []:
        for key in ("rule", "field", "exclude"):
            _require(rule, key, PARTNER_FILE, "inclusion[].")
        if rule["field"] not in declared:
            raise MappingError(
                PARTNER_FILE,
                f"inclusion rule field '{rule['field']}' is not declared in fields.csv",
                line=_yaml_line(text, "inclusion"),
            )
        rules.append(
            InclusionRule(
                rule=str(rule["rule"]),
                field=rule["field"],
                exclude=tuple(str(v) for v in rule["exclude"]),
            )
        )
    years = raw.get("year_range") or {}
    coverage = raw.get("coverage") or {}
    return PartnerConfig(
        code=code,
        name=str(raw.get("name", code)),
        folder=folder,
        reader=reader,
        fields=fields,
        values=_load_values(folder, fields, codebook),
        countries=_load_countries(folder),
        age_ranges=_load_age_ranges(folder),
        derive=_load_derive(raw, text, fields),
        inclusion=tuple(rules),
        record_id=record_id,
        null_values=tuple(str(v) for v in raw.get("null_values", [""])),
        year_min=years.get("min"),
        year_max=years.get("max"),
        coverage_threshold=float(coverage.get("threshold", 0.0)),
        datasource=str(raw.get("datasource", "")),
        mapping_hash=mapping_folder_hash(folder),
        extra={
            k: v for k, v in raw.items() if k not in {"partner", "reader", "derive", "inclusion"}
        },
    )


def available_partners(root: str | Path | None = None) -> list[str]:
    root = Path(root) if root else mappings_dir()
    return sorted(p.name for p in root.iterdir() if (p / PARTNER_FILE).exists())
