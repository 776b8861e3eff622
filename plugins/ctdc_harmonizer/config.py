"""Partner mapping folders: load, validate, and describe them.

A partner is described only by files in `mappings/<partner>/` (see
mappings/README.md): `partner.yaml`, `fields.csv`, `values.csv` and the optional
`countries.csv` and `age_ranges.csv`. `partner.yaml` is validated by pydantic
models (every key, its type and range), the CSV tables by pandera schemas. Every
problem found while loading is a MappingError naming the file, the line and the
key or column; mapping files are the team's own, so a message may quote them.
"""

from __future__ import annotations

import codecs
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
import pandera.pandas as pa
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ctdc_harmonizer.codebook import Codebook, default_codebook, iso3_codes
from ctdc_harmonizer.errors import MappingError
from ctdc_harmonizer.paths import mappings_dir
from ctdc_harmonizer.safety import DEFAULT_MIN_ROWS
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
REQUIRED_FLAGS = {"", "yes", "no", "true", "false", "1", "0"}


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
    # Identifying fields a withdrawal is matched on when the partner has no record id.
    withdrawal_match: tuple[str, ...] = ()
    # Name fields and date-of-birth field of the cross-partner linkage keys (privacy/linkage).
    linkage_names: tuple[str, ...] = ()
    linkage_birthdate: str = ""
    null_values: tuple[str, ...] = ("",)
    year_min: int | None = None
    year_max: int | None = None
    coverage_threshold: float = 0.0
    unmapped_min_rows: int = DEFAULT_MIN_ROWS
    datasource: str = ""
    mapping_hash: str = ""

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


# --- partner.yaml: pydantic models --------------------------------------------------------


def _text(value: Any) -> Any:
    """Numbers written unquoted (`-99`) are text; YAML's booleans (`No`, `yes`, `off`) are
    refused, because the partner almost certainly meant the word."""
    if isinstance(value, bool):
        raise ValueError('YAML reads this as true/false: put the word in quotes ("No")')
    if isinstance(value, int | float):
        return str(value)
    return value


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str | int | float) else value


Text = Annotated[str, BeforeValidator(_text)]
Name = Annotated[str, BeforeValidator(_text), Field(min_length=1)]
TextList = Annotated[list[Text], BeforeValidator(_as_list)]
NameList = Annotated[list[Name], BeforeValidator(_as_list), Field(min_length=1)]


class _Model(BaseModel):
    """Unknown keys are errors (a typo must not pass as a default); `key:` with nothing
    after it means the key is not given."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_is_absent(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


class ReaderModel(_Model):
    format: Literal["excel", "csv", "jsonl"]
    files: NameList
    encoding: Name = "utf-8"
    sheet: Annotated[int, Field(ge=0)] | Annotated[str, Field(min_length=1)] = 0
    header_row: int = Field(1, ge=1)
    data_start_row: int | None = Field(None, ge=2)
    csv_delimiter: str = Field(",", min_length=1, max_length=1)

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown text encoding '{value}'") from None
        return value

    @model_validator(mode="after")
    def _data_after_header(self) -> ReaderModel:
        if self.data_start_row is not None and self.data_start_row <= self.header_row:
            raise ValueError("data_start_row must be greater than header_row")
        return self


class _Source(_Model):
    field: Name
    reference: Name | None = None


class YearSource(_Source):
    method: Literal["date", "year"]


class AgeSource(_Source):
    method: Literal["age_years", "birthdate", "age_range", "codebook"]

    @model_validator(mode="after")
    def _birthdate_needs_reference(self) -> AgeSource:
        if self.method == "birthdate" and not self.reference:
            raise ValueError("method birthdate needs 'reference' (the date the age is taken at)")
        return self


class CountrySource(_Source):
    method: Literal["country"]


class MonthsSource(_Source):
    method: Literal["months", "codebook"]


class DeriveModel(_Model):
    yearOfRegistration: list[YearSource] = Field(min_length=1)
    ageBroad: list[AgeSource] = []
    citizenship: list[CountrySource] = []
    CountryOfExploitation: list[CountrySource] = []
    traffickMonths: list[MonthsSource] = []


class InclusionModel(_Model):
    rule: Name
    field: Name
    exclude: NameList


class YearRangeModel(_Model):
    min: int | None = Field(None, ge=1900, le=2100)
    max: int | None = Field(None, ge=1900, le=2100)

    @model_validator(mode="after")
    def _ordered(self) -> YearRangeModel:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min is greater than max")
        return self


class CoverageModel(_Model):
    threshold: float = Field(0.0, ge=0.0, le=1.0)
    # k: an unknown value is listed in the restricted unmapped report only from k rows on.
    report_min_rows: int = Field(DEFAULT_MIN_ROWS, ge=1)


class WithdrawalsModel(_Model):
    match_on: NameList

    @field_validator("match_on")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a field is listed twice")
        return value


class LinkageModel(_Model):
    """Fields the cross-partner linkage keys are made of (docs/privacy.md)."""

    names: NameList
    birthdate: Name


class PartnerModel(_Model):
    partner: Name
    name: Text = ""
    datasource: Text = ""
    reader: ReaderModel
    null_values: TextList = [""]
    record_id: Text = ""
    inclusion: list[InclusionModel] = []
    year_range: YearRangeModel = YearRangeModel()
    derive: DeriveModel
    coverage: CoverageModel = CoverageModel()
    withdrawals: WithdrawalsModel | None = None
    linkage: LinkageModel | None = None


def _yaml_lines(node: yaml.Node | None, path: tuple = ()) -> dict[tuple, int]:
    """Line number of every key and list item in a YAML document, by its path; a key
    written twice (which YAML silently resolves to the last) is refused here."""
    if node is None:
        return {}
    lines = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        seen: set = set()
        for key, value in node.value:
            name = key.value
            where = path + (name,)
            if name in seen:
                raise MappingError(
                    PARTNER_FILE,
                    f"key '{_dotted(where)}' is given twice",
                    line=key.start_mark.line + 1,
                )
            seen.add(name)
            lines.update(_yaml_lines(value, where))
            lines[where] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines.update(_yaml_lines(item, path + (index,)))
    return lines


def _dotted(path: tuple) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _partner_error(error: ValidationError, lines: dict[tuple, int]) -> MappingError:
    """The first pydantic error as a MappingError with the YAML line of its key. Only the
    location and pydantic's message are used (the message describes, never quotes)."""
    first = error.errors(include_url=False, include_input=False)[0]
    loc = tuple(first["loc"])
    known = loc
    while known and known not in lines:
        known = known[:-1]
    # Union branches add type names to the location; keys that do not exist yet do not.
    key = loc if first["type"] in {"missing", "extra_forbidden"} else known
    line = lines.get(known)
    if first["type"] == "missing":
        return MappingError(PARTNER_FILE, f"required key '{_dotted(key)}' is missing", line=line)
    if first["type"] == "extra_forbidden":
        return MappingError(PARTNER_FILE, f"unknown key '{_dotted(key)}'", line=line)
    message = first["msg"].removeprefix("Value error, ")
    if not key:
        return MappingError(
            PARTNER_FILE, "must be a mapping of keys (partner:, reader:, derive: ...)", line=line
        )
    return MappingError(PARTNER_FILE, f"key '{_dotted(key)}': {message}", line=line)


def _parse_partner_yaml(path: Path) -> tuple[PartnerModel, dict[tuple, int]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingError(PARTNER_FILE, f"cannot be read ({type(exc).__name__})") from None
    try:
        raw = yaml.safe_load(text)
        lines = _yaml_lines(yaml.compose(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise MappingError(
            PARTNER_FILE, "not valid YAML", line=mark.line + 1 if mark else None
        ) from None
    try:
        return PartnerModel.model_validate(raw if raw is not None else {}), lines
    except ValidationError as exc:
        raise _partner_error(exc, lines) from None


# --- the CSV tables: pandera schemas --------------------------------------------------------


@dataclass(frozen=True)
class RowRule:
    """A row-wise check of a mapping table: `passes` is vectorised over the whole table;
    `problem` is formatted with the failing row's cells."""

    column: str
    problem: str
    passes: Callable[[pd.DataFrame], pd.Series]


def _read_table(path: Path, columns: list[str], required: list[str]) -> pd.DataFrame:
    """A mapping CSV as trimmed strings, with `line` = its line number in the file."""
    if not path.exists():
        raise MappingError(path.name, f"file not found in {path.parent}")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise MappingError(path.name, f"not a readable UTF-8 CSV ({type(exc).__name__})") from None
    table.columns = [str(c).strip() for c in table.columns]
    presence = pa.DataFrameSchema({col: pa.Column(str, required=True) for col in required})
    try:
        presence.validate(table, lazy=True)
    except pa.errors.SchemaErrors as exc:
        missing = exc.failure_cases.loc[exc.failure_cases["check"] == "column_in_dataframe"]
        column = str(missing["failure_case"].iloc[0]) if len(missing) else required[0]
        raise MappingError(path.name, "required column is missing", line=1, column=column) from None
    for col in columns:
        if col not in table.columns:
            table[col] = ""
    table = table[columns].apply(lambda s: s.str.strip())
    table.insert(len(columns), "line", range(2, len(table) + 2))
    return table


def _validate_rows(table: pd.DataFrame, file: str, rules: list[RowRule]) -> None:
    """Run the rules as one pandera schema; report the first failing line (rules in order)."""
    checks = [
        pa.Check(lambda frame, rule=rule: rule.passes(frame).astype(bool), error=str(number))
        for number, rule in enumerate(rules)
    ]
    try:
        pa.DataFrameSchema(checks=checks).validate(table, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases.dropna(subset=["index"])
        cases = cases.assign(
            rule=cases["check"].astype(int),
            line=table.loc[cases["index"].astype(int), "line"].to_numpy(),
        ).sort_values(["line", "rule"])
        first = cases.iloc[0]
        rule = rules[int(first["rule"])]
        row = table.loc[int(first["index"])].to_dict()
        raise MappingError(
            file, rule.problem.format(**row), line=int(first["line"]), column=rule.column
        ) from None


def _is_whole_number(values: pd.Series) -> pd.Series:
    return values.str.fullmatch(r"\d{1,3}")


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
    allowed = ", ".join(sorted(ROLES))
    _validate_rows(
        table,
        FIELDS_FILE,
        [
            RowRule("field", "field name is empty", lambda t: t["field"] != ""),
            RowRule("field", "field is listed twice", lambda t: ~t["field"].duplicated()),
            RowRule(
                "role",
                f"unknown role '{{role}}' (allowed: {allowed})",
                lambda t: t["role"].isin(ROLES),
            ),
            RowRule(
                "required",
                "required must be yes or no (empty = yes)",
                lambda t: t["required"].str.lower().isin(REQUIRED_FLAGS),
            ),
        ],
    )
    not_required = table["required"].str.lower().isin({"no", "false", "0"})
    return tuple(
        FieldSpec(name=name, role=role, delimiter=delimiter, format=fmt, required=not optional)
        for name, role, delimiter, fmt, optional in zip(
            table["field"],
            table["role"],
            table["delimiter"],
            table["format"],
            not_required,
            strict=True,
        )
    )


def _load_values(folder: Path, fields: tuple[FieldSpec, ...], codebook: Codebook) -> pd.DataFrame:
    path = folder / VALUES_FILE
    if not path.exists():
        return pd.DataFrame(columns=["field", "key", "variable", "value", "match", "note", "line"])
    table = _read_table(path, VALUES_COLUMNS, ["field", "source_value", "variable", "value"])
    coded = {f.name for f in fields if f.role == "coded"}

    def known_variable(t: pd.DataFrame) -> pd.Series:
        return (t["variable"] == "") | t["variable"].map(codebook.has_variable)

    def canonical(t: pd.DataFrame) -> pd.Series:
        # Only rows whose variable is known are judged here (the rule above covers the rest).
        pairs = zip(t["variable"], t["value"], strict=True)
        return pd.Series(
            [
                codebook.canonical(codebook.variable(var).name, val)
                if var and codebook.has_variable(var)
                else ""
                for var, val in pairs
            ],
            index=t.index,
            dtype=object,
        )

    def variable_name(t: pd.DataFrame) -> pd.Series:
        return t["variable"].map(
            lambda v: codebook.variable(v).name if codebook.has_variable(v) else ""
        )

    matches = ", ".join(sorted(MATCH_TYPES))
    _validate_rows(
        table,
        VALUES_FILE,
        [
            RowRule(
                "field",
                "field is not declared with role 'coded' in fields.csv",
                lambda t: t["field"].isin(coded),
            ),
            RowRule(
                "match",
                "match type is empty: review the row (exact, broader, narrower, approximate, "
                "unmappable)",
                lambda t: t["match"] != "",
            ),
            RowRule(
                "match",
                f"unknown match type '{{match}}' (allowed: {matches})",
                lambda t: t["match"].isin(MATCH_TYPES),
            ),
            RowRule(
                "value",
                "a value is given without a variable",
                lambda t: (t["variable"] != "") | (t["value"] == ""),
            ),
            RowRule("variable", "'{variable}' is not a codebook v3 variable", known_variable),
            RowRule(
                "variable",
                "'{variable}' is derived (partner.yaml derive:), not value-mapped",
                lambda t: ~variable_name(t).isin(DERIVE_METHODS),
            ),
            RowRule(
                "value",
                "'{value}' is not an allowed value of {variable}",
                lambda t: (t["variable"] == "") | ~known_variable(t) | canonical(t).notna(),
            ),
        ],
    )
    table["value"] = canonical(table).fillna("").astype(str)
    table["variable"] = variable_name(table)
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
    table["key"] = normalize_series(table["source_value"])
    codes = iso3_codes()
    matches = ", ".join(sorted(MATCH_TYPES))
    _validate_rows(
        table,
        COUNTRIES_FILE,
        [
            RowRule("match", "match type is empty: review the row", lambda t: t["match"] != ""),
            RowRule(
                "match",
                f"unknown match type '{{match}}' (allowed: {matches})",
                lambda t: t["match"].isin(MATCH_TYPES),
            ),
            RowRule(
                "iso3",
                "'{iso3}' is not an ISO 3166-1 alpha-3 code",
                lambda t: (t["iso3"] == "") | t["iso3"].isin(codes),
            ),
            RowRule(
                "source_value", "source value is listed twice", lambda t: ~t["key"].duplicated()
            ),
        ],
    )
    return table[["key", "iso3", "line"]]


def _load_age_ranges(folder: Path) -> pd.DataFrame:
    path = folder / AGE_RANGES_FILE
    if not path.exists():
        return pd.DataFrame(columns=["key", "min_age", "max_age", "line"])
    table = _read_table(path, AGE_RANGES_COLUMNS, ["source_value", "min_age", "max_age"])
    _validate_rows(
        table,
        AGE_RANGES_FILE,
        [
            RowRule("min_age", "min_age is required", lambda t: t["min_age"] != ""),
            RowRule(
                "min_age", "not a whole number of years", lambda t: _is_whole_number(t["min_age"])
            ),
            RowRule(
                "max_age",
                "not a whole number of years",
                lambda t: (t["max_age"] == "") | _is_whole_number(t["max_age"]),
            ),
            RowRule(
                "max_age",
                "max_age is below min_age",
                lambda t: (
                    pd.to_numeric(t["max_age"], errors="coerce").fillna(999)
                    >= pd.to_numeric(t["min_age"], errors="coerce").fillna(0)
                ),
            ),
        ],
    )
    for col in ("min_age", "max_age"):
        table[col] = pd.to_numeric(table[col].replace("", None))
    table["key"] = normalize_series(table["source_value"])
    return table[["key", "min_age", "max_age", "line"]]


# --- the partner as a whole ---------------------------------------------------------------


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
    """Load and validate one partner's mapping folder."""
    folder = Path(folder)
    codebook = codebook or default_codebook()
    config_path = folder / PARTNER_FILE
    if not config_path.exists():
        raise MappingError(str(config_path), "partner.yaml not found")
    model, lines = _parse_partner_yaml(config_path)
    fields = _load_fields(folder)
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
        values=_load_values(folder, fields, codebook),
        countries=_load_countries(folder),
        age_ranges=_load_age_ranges(folder),
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
        mapping_hash=mapping_folder_hash(folder),
    )


def available_partners(root: str | Path | None = None) -> list[str]:
    root = Path(root) if root else mappings_dir()
    return sorted(p.name for p in root.iterdir() if (p / PARTNER_FILE).exists())
