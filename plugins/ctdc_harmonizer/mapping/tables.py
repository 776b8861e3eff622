"""The mapping CSV tables (fields, values, countries, age ranges): pandera-checked, each
problem a MappingError naming the file, the line and the column."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pandera.pandas as pa

from ctdc_harmonizer.codebook import Codebook, iso3_codes
from ctdc_harmonizer.errors import MappingError
from ctdc_harmonizer.harmonize import derivations
from ctdc_harmonizer.mapping.spec import (
    AGE_RANGES_FILE,
    COUNTRIES_FILE,
    FIELDS_FILE,
    ROLES,
    VALUES_FILE,
    FieldSpec,
)
from ctdc_harmonizer.text import normalize_series

MATCH_TYPES = {"exact", "broader", "narrower", "approximate", "unmappable"}
FIELDS_COLUMNS = ["field", "role", "delimiter", "format", "description"]
VALUES_COLUMNS = ["field", "source_value", "variable", "value", "match", "note"]
COUNTRIES_COLUMNS = ["source_value", "iso3", "match", "note"]
AGE_RANGES_COLUMNS = ["source_value", "min_age", "max_age", "note"]
REQUIRED_FLAGS = {"", "yes", "no", "true", "false", "1", "0"}


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


def load_fields(folder: Path) -> tuple[FieldSpec, ...]:
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


def load_values(folder: Path, fields: tuple[FieldSpec, ...], codebook: Codebook) -> pd.DataFrame:
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
                lambda t: ~variable_name(t).isin(derivations.derivable_variables(codebook)),
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


def load_countries(folder: Path) -> pd.DataFrame:
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


def load_age_ranges(folder: Path) -> pd.DataFrame:
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
