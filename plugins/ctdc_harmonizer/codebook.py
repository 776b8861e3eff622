"""The CTDC codebook v3, loaded from `schemas/` and turned into checks.

Nothing about the 27 variables is written in Python: names, order, allowed
values, variant spellings, bins and Appendix II merges all come from the YAML
file. The pandera schema of the harmonized table is generated here from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path

import pandas as pd
import pandera.pandas as pa
import pycountry

from ctdc_harmonizer.fileio import load_yaml, sha256_of
from ctdc_harmonizer.paths import schemas_dir
from ctdc_harmonizer.text import normalize_token

CODEBOOK_FILE = "ctdc_codebook_v3.yaml"
BINARY_TRUE = "1"
VARIABLE_TYPES = {"year", "categorical", "country", "binary"}


@dataclass(frozen=True)
class CodebookValue:
    value: str
    aliases: tuple[str, ...] = ()
    min: int | None = None
    max: int | None = None


@dataclass(frozen=True)
class Variable:
    number: int
    name: str
    label: str
    group: str
    type: str
    values: tuple[CodebookValue, ...] = ()
    aliases: tuple[str, ...] = ()
    merged_from: tuple[str, ...] = ()
    required: bool = False
    expect_known_share: float | None = None  # quality warning below this share of non-NULLs

    @property
    def allowed(self) -> list[str]:
        if self.type == "binary":
            return [BINARY_TRUE]
        return [v.value for v in self.values]


@dataclass(frozen=True, eq=False)  # hashed by identity: loaded once, cached
class Codebook:
    version: str
    title: str
    variables: tuple[Variable, ...]
    groups: dict[str, str]
    country_rules: dict[str, str] = field(default_factory=dict)
    year_min: int = 2002
    source_path: str = ""

    @property
    def source_file(self) -> str:
        """The codebook file's name (recorded in release metadata)."""
        return Path(self.source_path).name

    @cached_property
    def sha256(self) -> str:
        """The codebook file's SHA-256: releases and hand-offs record which file made them."""
        return sha256_of(self.source_path)

    @property
    def columns(self) -> list[str]:
        return [v.name for v in self.variables]

    @property
    def binary_columns(self) -> list[str]:
        return [v.name for v in self.variables if v.type == "binary"]

    def variable(self, name: str) -> Variable:
        """Look a variable up by its name or a recorded alias (e.g. meansWithholdDocuments)."""
        for var in self.variables:
            if name == var.name or name in var.aliases:
                return var
        raise KeyError(name)

    def has_variable(self, name: str) -> bool:
        try:
            self.variable(name)
        except KeyError:
            return False
        return True

    def spelling_map(self, name: str) -> dict[str, str]:
        """Normalized spelling (canonical or variant) -> canonical value, for one variable."""
        var = self.variable(name)
        mapping: dict[str, str] = {}
        for val in var.values:
            for spelling in (val.value, *val.aliases):
                mapping[normalize_token(spelling)] = val.value
        if var.type == "binary":
            mapping[normalize_token(BINARY_TRUE)] = BINARY_TRUE
        return mapping

    def canonical(self, name: str, spelling: str) -> str | None:
        """The canonical spelling of `spelling` for variable `name`, or None if not allowed."""
        var = self.variable(name)
        if var.type == "country":
            code = str(spelling).strip().upper()
            return code if code in iso3_codes() else None
        if var.type == "year":
            text = str(spelling).strip()
            return text if text.isdigit() else None
        return self.spelling_map(name).get(normalize_token(spelling))

    def bins(self, name: str) -> pd.DataFrame:
        """Numeric bins of a binned variable as a frame (value, min, max); open max is +inf."""
        var = self.variable(name)
        rows = [
            (v.value, v.min, float("inf") if v.max is None else v.max)
            for v in var.values
            if v.min is not None
        ]
        return pd.DataFrame(rows, columns=["value", "min", "max"])

    def merges(self) -> dict[str, str]:
        """Previous-scheme variable -> v3 variable, from Appendix II."""
        return {old: var.name for var in self.variables for old in var.merged_from}


@cache
def iso3_codes() -> frozenset[str]:
    return frozenset(c.alpha_3 for c in pycountry.countries)


def _variable_from_dict(raw: dict) -> Variable:
    return Variable(
        number=int(raw["number"]),
        name=raw["name"],
        label=raw["label"],
        group=raw["group"],
        type=raw["type"],
        values=tuple(
            CodebookValue(
                value=str(v["value"]),
                aliases=tuple(str(a) for a in v.get("aliases", [])),
                min=v.get("min"),
                max=v.get("max"),
            )
            for v in raw.get("values", [])
        ),
        aliases=tuple(raw.get("aliases", [])),
        merged_from=tuple(raw.get("merged_from", [])),
        required=bool(raw.get("required", False)),
        expect_known_share=raw.get("expect_known_share"),
    )


def load_codebook(path: str | Path | None = None) -> Codebook:
    """Read and sanity-check the codebook file (order, uniqueness, types, groups)."""
    path = Path(path) if path else schemas_dir() / CODEBOOK_FILE
    raw = load_yaml(path.read_text(encoding="utf-8"))
    variables = tuple(_variable_from_dict(v) for v in raw["variables"])
    groups = dict(raw["codebook"]["groups"])
    numbers = [v.number for v in variables]
    if numbers != list(range(1, len(variables) + 1)):
        raise ValueError(f"{path}: variables must be numbered 1..n in codebook order")
    names = [n for v in variables for n in (v.name, *v.aliases)]
    if len(names) != len(set(names)):
        raise ValueError(f"{path}: variable names and aliases must be unique")
    for var in variables:
        if var.type not in VARIABLE_TYPES:
            raise ValueError(f"{path}: variable {var.name} has unknown type {var.type!r}")
        if var.group not in groups:
            raise ValueError(f"{path}: variable {var.name} has unknown group {var.group!r}")
    year_var = next(v for v in raw["variables"] if v["type"] == "year")
    rules = {str(r["source"]): str(r["iso3"]) for r in raw.get("country_rules", [])}
    return Codebook(
        version=str(raw["codebook"]["version"]),
        title=str(raw["codebook"]["title"]),
        variables=variables,
        groups=groups,
        country_rules=rules,
        year_min=int(year_var.get("range", {}).get("min", 2002)),
        source_path=str(path),
    )


@cache
def default_codebook() -> Codebook:
    return load_codebook()


def harmonized_schema(codebook: Codebook, year_max: int, year_min: int | None = None):
    """The pandera contract of the harmonized table, generated from the codebook."""
    year_min = codebook.year_min if year_min is None else year_min
    columns: dict[str, pa.Column] = {}
    for var in codebook.variables:
        if var.type == "year":
            columns[var.name] = pa.Column(
                "Int64",
                checks=pa.Check.in_range(year_min, year_max),
                nullable=not var.required,
            )
        elif var.type == "country":
            columns[var.name] = pa.Column(
                "string", checks=pa.Check.isin(sorted(iso3_codes())), nullable=True
            )
        else:
            columns[var.name] = pa.Column(
                "string", checks=pa.Check.isin(var.allowed), nullable=True
            )
    return pa.DataFrameSchema(columns, strict=True, ordered=True, name="ctdc_harmonized_v3")
