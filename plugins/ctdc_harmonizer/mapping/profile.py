"""`ctdc profile`: what is in a partner's extract, and a mapping folder to start from.

In the spirit of OHDSI WhiteRabbit's scan report: for every column of the delivered
files, a type guess, how many cells are empty, how many distinct values there are and,
for category columns only, how often each value occurs. Then a draft mapping folder
(`mapping_template/`) listing every column seen and every distinct category value.

Privacy rules (the files are case data about survivors):
- values are listed only for declared fields whose role is coded, country, age_range or
  number; never for identifier, free-text, record-id, date, ignored or undeclared columns
  (of those, only the column name and counts are reported);
- in profile_values.csv a value seen fewer than MIN_COUNT times is not shown: such values
  are added up into one line per field;
- a category value that looks like contact data (an e-mail, a long number) is never shown.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pandas as pd
import yaml

from ctdc_harmonizer.codebook import default_codebook
from ctdc_harmonizer.errors import CtdcError
from ctdc_harmonizer.harmonize.countries import country_table
from ctdc_harmonizer.harmonize.mapper import split_multi
from ctdc_harmonizer.harmonize.unmapped import CONTACT_PATTERN, CONTACT_REDACTED
from ctdc_harmonizer.ingest.extract import as_strings, read_raw
from ctdc_harmonizer.ingest.files import find_extract_files
from ctdc_harmonizer.ingest.withdrawals import is_withdrawals_file
from ctdc_harmonizer.mapping.partner import load_partner
from ctdc_harmonizer.mapping.spec import (
    COUNTRIES_FILE,
    FIELDS_FILE,
    PARTNER_FILE,
    VALUES_FILE,
    PartnerConfig,
    ReaderSpec,
)
from ctdc_harmonizer.mapping.tables import COUNTRIES_COLUMNS, FIELDS_COLUMNS, VALUES_COLUMNS
from ctdc_harmonizer.paths import mappings_dir
from ctdc_harmonizer.text import normalize_series

log = logging.getLogger(__name__)

MIN_COUNT = 5  # values seen fewer times are not listed in profile_values.csv
LISTABLE_ROLES = {"coded", "country", "age_range", "number"}
CODED_MAX_DISTINCT = 50  # a text column with at most this many distinct values looks coded
INTEGER = r"^[+-]?\d+$"
DECIMAL = r"^[+-]?(\d+[.,]\d*|[.,]\d+)$"
DATE = r"^\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?)?$"
PROFILE_COLUMNS = [
    "field",
    "role",
    "declared",
    "files",
    "rows",
    "empty",
    "non_empty",
    "distinct",
    "type",
    "values_listed",
    "note",
]
VALUE_COLUMNS = ["field", "value", "count"]
FORMATS_BY_SUFFIX = {
    ".xlsx": "excel",
    ".xlsm": "excel",
    ".xls": "excel",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
}
TEMPLATE_DIR = "mapping_template"


def _provisional_config(partner: str, landing: Path) -> PartnerConfig:
    """A partner without a mapping folder yet: every file of one format, no field declared."""
    folder = landing / partner
    if not folder.is_dir():
        raise CtdcError(f"partner '{partner}': landing folder {folder} not found")
    suffixes = {
        p.suffix.lower() for p in folder.iterdir() if p.is_file() and not is_withdrawals_file(p)
    }
    formats = [FORMATS_BY_SUFFIX[s] for s in sorted(suffixes) if s in FORMATS_BY_SUFFIX]
    if not formats:
        raise CtdcError(f"partner '{partner}': no excel, csv or jsonl file in {folder}")
    chosen = max(set(formats), key=formats.count)
    patterns = tuple(f"*{s}" for s, f in FORMATS_BY_SUFFIX.items() if f == chosen)
    return PartnerConfig(
        code=partner,
        name=partner,
        folder=folder,
        reader=ReaderSpec(format=chosen, files=patterns),
        fields=(),
        values=pd.DataFrame(columns=["field", "key", "variable", "value", "match", "note", "line"]),
        countries=pd.DataFrame(columns=["key", "iso3", "line"]),
        age_ranges=pd.DataFrame(columns=["key", "min_age", "max_age", "line"]),
        derive={},
    )


def _config(partner: str, landing: Path, mappings: str | Path | None) -> tuple[PartnerConfig, bool]:
    folder = Path(mappings or mappings_dir()) / partner
    if (folder / PARTNER_FILE).exists():
        return load_partner(folder), True
    return _provisional_config(partner, landing), False


def _read_files(config: PartnerConfig, landing: Path) -> tuple[pd.DataFrame, dict, dict]:
    """All delivered files as one frame of trimmed strings (every column, declared or not),
    the per-file counts and, per column: files holding it, their rows, whether typed as dates."""
    frames, files, columns = [], {}, {}
    for path in find_extract_files(config, landing):
        raw = read_raw(config, path).frame
        raw.columns = [str(c).strip() for c in raw.columns]
        raw = raw.loc[:, ~pd.Index(raw.columns).duplicated()]
        text = pd.DataFrame({c: as_strings(raw[c], [""]) for c in raw.columns}, index=raw.index)
        blank = text.isna().all(axis=1)
        rows = int((~blank).sum())
        for column in raw.columns:  # columns, not records
            entry = columns.setdefault(column, {"files": 0, "rows": 0, "datelike": True})
            entry["files"] += 1
            entry["rows"] += rows
            kind = pd.api.types.infer_dtype(raw.loc[~blank, column], skipna=True)
            entry["datelike"] &= kind in {"datetime", "datetime64", "date", "empty"}
        files[path.name] = {
            "rows": rows,
            "blank_rows_skipped": int(blank.sum()),
            "columns": len(raw.columns),
        }
        frames.append(text.loc[~blank])
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return frame, files, columns


def _type_guess(values: pd.Series, datelike: bool) -> tuple[str, int]:
    """(type, distinct) of the non-empty values of one column."""
    if values.empty:
        return "empty", 0
    uniques = pd.Series(values.unique(), dtype="string")  # patterns tested once per value
    distinct = len(uniques)
    if datelike or uniques.str.fullmatch(DATE).all():
        return "date", distinct
    if uniques.str.fullmatch(INTEGER).all():
        return "integer", distinct
    if uniques.str.fullmatch(DECIMAL).all():
        return "decimal", distinct
    if distinct <= CODED_MAX_DISTINCT and distinct <= len(values) / 2:
        return "coded", distinct
    return "text", distinct


def _tokens(values: pd.Series, config: PartnerConfig, field: str) -> pd.Series:
    """The values of one listable field, split into tokens when the field is multi-valued."""
    spec = config.field(field)
    if spec.multi and spec.role == "coded":
        values = split_multi(values, spec.delimiter, config.values, field)
    elif spec.multi:
        values = values.str.split(spec.delimiter, regex=False).explode()
    tokens = values.astype("string").str.strip()
    return tokens[tokens.notna() & (tokens != "")]


def _value_counts(frame: pd.DataFrame, config: PartnerConfig, listable: list[str]) -> pd.DataFrame:
    """field, value, count for every distinct (trimmed) value of the listable fields: the one
    pass over the records; everything after works on this small table."""
    parts = []
    for field in listable:  # fields, not records
        counts = _tokens(frame[field].dropna(), config, field).value_counts()
        parts.append(
            pd.DataFrame(
                {"field": field, "value": counts.index.astype(str), "count": counts.to_numpy()}
            )
        )
    if not parts:
        return pd.DataFrame(columns=[*VALUE_COLUMNS, "contact"])
    table = pd.concat(parts, ignore_index=True)
    table["contact"] = table["value"].str.contains(CONTACT_PATTERN, regex=True)
    return table


def _hide_rare(values: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """Values seen fewer than MIN_COUNT times (and contact-like ones) become one line per field."""
    values = values.assign(value=values["value"].where(~values["contact"], CONTACT_REDACTED))
    values = values.groupby(["field", "value"], as_index=False, sort=False)["count"].sum()
    rare = (values["count"] < MIN_COUNT) | (values["value"] == CONTACT_REDACTED)
    shown = values.loc[~rare]
    hidden = (
        values.loc[rare]
        .groupby("field")
        .agg(distinct=("value", "size"), count=("count", "sum"))
        .reset_index()
    )
    hidden["value"] = (
        "<"
        + hidden["distinct"].astype(str)
        + f" other value(s), each seen fewer than {MIN_COUNT} times"
        " or looking like contact data>"
    )
    table = pd.concat([shown, hidden[VALUE_COLUMNS]], ignore_index=True)
    table["_order"] = table["field"].map({f: i for i, f in enumerate(order)})
    table["_rare"] = table["value"].str.startswith("<")
    table = table.sort_values(
        ["_order", "_rare", "count", "value"], ascending=[True, True, False, True]
    )
    return table[VALUE_COLUMNS].reset_index(drop=True)


def _profile_table(
    frame: pd.DataFrame, config: PartnerConfig, columns: dict, listable: list[str]
) -> pd.DataFrame:
    """One line per column seen in the files, then per declared field not seen."""
    declared = {f.name: f for f in config.fields}
    nulls = set(config.null_values) | {""}
    rows = []
    for name, seen in columns.items():  # columns, not records
        spec = declared.get(name)
        values = frame[name].dropna()
        values = values[~values.isin(nulls)]
        kind, distinct = _type_guess(values, seen["datelike"])
        if spec:
            note = ""
        elif name.startswith("Unnamed:"):
            note = "column without a name in the file"
        else:
            note = "not declared in fields.csv"
        rows.append(
            (
                name,
                spec.role if spec else "",
                bool(spec),
                seen["files"],
                seen["rows"],
                seen["rows"] - len(values),
                len(values),
                distinct,
                kind,
                name in listable,
                note,
            )
        )
    for name, spec in declared.items():
        if name not in columns:
            note = "declared in fields.csv, not in the files" + (
                " (required)" if spec.required else ""
            )
            rows.append((name, spec.role, True, 0, 0, 0, 0, 0, "", False, note))
    return pd.DataFrame(rows, columns=PROFILE_COLUMNS)


def _template_fields(config: PartnerConfig, profile: pd.DataFrame) -> pd.DataFrame:
    declared = {f.name: f for f in config.fields}
    current = {}
    path = config.folder / FIELDS_FILE
    if path.exists():
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        current = {row["field"]: row for _, row in table.iterrows()}  # mapping rows, not records
    rows = []
    for item in profile.itertuples(index=False):
        spec = declared.get(item.field)
        if spec:
            described = current.get(item.field, {}).get("description", "")
            rows.append(
                (
                    item.field,
                    spec.role,
                    spec.delimiter,
                    spec.format,
                    "yes" if spec.required else "no",
                    described,
                )
            )
        else:
            hint = f"TO DECIDE (type guess: {item.type}; {item.empty} of {item.rows} empty)"
            rows.append((item.field, "", "", "", "yes", hint))
    return pd.DataFrame(rows, columns=[*FIELDS_COLUMNS[:4], "required", "description"])


def _first_spelling(counts: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """One line per case- and space-insensitive key: its most frequent spelling, total count."""
    counts = counts.assign(key=normalize_series(counts["value"]))
    counts = counts.sort_values([*by, "key", "count"], ascending=[True] * (len(by) + 1) + [False])
    totals = counts.groupby([*by, "key"])["count"].sum()
    first = counts.drop_duplicates([*by, "key"]).set_index([*by, "key"])
    first["count"] = totals
    return first.reset_index()


def _read_current(path: Path, columns: list[str]) -> pd.DataFrame:
    table = (
        pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        if path.exists()
        else pd.DataFrame(columns=columns)
    )
    for col in columns:
        if col not in table.columns:
            table[col] = ""
    return table[columns]


def _template_values(config: PartnerConfig, counts: pd.DataFrame) -> pd.DataFrame:
    """Current values.csv plus every distinct value of the coded fields it does not know yet
    (target left empty: to be filled in), one line per case- and space-insensitive spelling."""
    current = _read_current(config.folder / VALUES_FILE, VALUES_COLUMNS)
    coded = {f.name for f in config.fields_with_role("coded")}
    seen = counts[counts["field"].isin(coded) & ~counts["contact"]]
    if seen.empty:
        return current
    first = _first_spelling(seen, ["field"])
    known = pd.MultiIndex.from_frame(config.values[["field", "key"]])
    new = first[~pd.MultiIndex.from_frame(first[["field", "key"]]).isin(known)]
    order = {f.name: i for i, f in enumerate(config.fields)}
    new = new.assign(_o=new["field"].map(order)).sort_values(["_o", "value"])
    added = pd.DataFrame(
        {
            "field": new["field"],
            "source_value": new["value"],
            "variable": "",
            "value": "",
            "match": "",
            "note": "TO MAP: seen " + new["count"].astype(str) + " time(s) in the extract",
        }
    )
    return pd.concat([current, added], ignore_index=True)


def _template_countries(config: PartnerConfig, counts: pd.DataFrame) -> pd.DataFrame | None:
    """Current countries.csv plus the country spellings nothing resolves yet."""
    country_fields = {f.name for f in config.fields_with_role("country")}
    current = _read_current(config.folder / COUNTRIES_FILE, COUNTRIES_COLUMNS)
    if not country_fields and current.empty:
        return None
    seen = counts[counts["field"].isin(country_fields) & ~counts["contact"]]
    if seen.empty:
        return current
    first = _first_spelling(seen.groupby("value", as_index=False)["count"].sum(), [])
    resolved = first["key"].map(country_table(first["key"], config, default_codebook()))
    new = first[resolved.isna().to_numpy()].sort_values("value")
    added = pd.DataFrame(
        {
            "source_value": new["value"],
            "iso3": "",
            "match": "",
            "note": "TO MAP: seen " + new["count"].astype(str) + " time(s) in the extract",
        }
    )
    return pd.concat([current, added], ignore_index=True)


def _skeleton_partner_yaml(config: PartnerConfig) -> str:
    body = {
        "partner": config.code,
        "name": config.code,
        "datasource": "",
        "reader": {"format": config.reader.format, "files": list(config.reader.files)},
        "null_values": [""],
        "record_id": "",
        "derive": {"yearOfRegistration": []},
        "coverage": {"threshold": 0.0},
    }
    head = (
        "# Draft written by `ctdc profile`: fill in datasource, record_id and derive\n"
        "# (yearOfRegistration is required), then declare every field in fields.csv.\n"
    )
    return head + yaml.safe_dump(body, sort_keys=False, allow_unicode=True)


def _write_template(
    config: PartnerConfig, has_mapping: bool, counts: pd.DataFrame, profile: pd.DataFrame, out: Path
) -> dict:
    template = out / TEMPLATE_DIR
    if template.exists():
        shutil.rmtree(template)
    template.mkdir(parents=True)
    if has_mapping:
        shutil.copyfile(config.folder / PARTNER_FILE, template / PARTNER_FILE)
        ages = config.folder / "age_ranges.csv"
        if ages.exists():
            shutil.copyfile(ages, template / ages.name)
    else:
        (template / PARTNER_FILE).write_text(_skeleton_partner_yaml(config), encoding="utf-8")
    fields = _template_fields(config, profile)
    fields.to_csv(template / FIELDS_FILE, index=False, encoding="utf-8")
    values = _template_values(config, counts)
    values.to_csv(template / VALUES_FILE, index=False, encoding="utf-8")
    countries = _template_countries(config, counts)
    if countries is not None:
        countries.to_csv(template / COUNTRIES_FILE, index=False, encoding="utf-8")
    return {
        "folder": str(template),
        "fields_to_decide": int((fields["role"] == "").sum()),
        "values_to_map": int(values["note"].str.startswith("TO MAP").sum()),
        "countries_to_map": int(countries["note"].str.startswith("TO MAP").sum())
        if countries is not None
        else 0,
    }


def profile_partner(
    landing: str | Path, partner: str, out: str | Path, mappings: str | Path | None = None
) -> dict:
    """Profile landing/<partner>/ into out/<partner>/ (profile.csv, profile_values.csv,
    profile.json, mapping_template/); return the summary (counts, paths, no values)."""
    landing = Path(landing)
    config, has_mapping = _config(partner, landing, mappings)
    frame, files, columns = _read_files(config, landing)
    declared = {f.name: f for f in config.fields}
    listable = [c for c in columns if c in declared and declared[c].role in LISTABLE_ROLES]
    # Cells that are missing by the partner's convention (e.g. -99) are not values.
    nulls = [v for v in config.null_values if v != ""]
    values_frame = frame[listable].replace(nulls, pd.NA) if listable else frame[[]]
    profile = _profile_table(frame, config, columns, listable)
    counts = _value_counts(values_frame, config, listable)
    values = _hide_rare(counts, list(columns))

    target = Path(out) / partner
    target.mkdir(parents=True, exist_ok=True)
    profile.to_csv(target / "profile.csv", index=False, encoding="utf-8")
    values.to_csv(target / "profile_values.csv", index=False, encoding="utf-8")
    template = _write_template(config, has_mapping, counts, profile, target)
    summary = {
        "partner": partner,
        "mapping_folder": str(config.folder) if has_mapping else None,
        "files": files,
        "rows": int(sum(f["rows"] for f in files.values())),
        "columns_seen": len(columns),
        "columns_undeclared": int((~profile["declared"]).sum()),
        "declared_fields_missing": profile.loc[profile["files"] == 0, "field"].tolist(),
        "fields_with_values_listed": listable,
        "min_count_shown": MIN_COUNT,
        "profile": str(target / "profile.csv"),
        "profile_values": str(target / "profile_values.csv"),
        "mapping_template": template,
    }
    (target / "profile.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    log.info(
        "profile %s: %d file(s), %d rows, %d column(s) (%d undeclared)",
        partner,
        len(files),
        summary["rows"],
        len(columns),
        summary["columns_undeclared"],
    )
    return summary
