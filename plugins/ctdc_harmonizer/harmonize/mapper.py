"""Map a de-identified partner frame onto the 27 codebook variables, vectorised.

Input: the staged frame from ingest.deidentify (strings; dates already years, birthdates
already ages). Output: a MappingResult holding the harmonized rows, the outcome of every row
(harmonized, excluded, rejected), the values the mapping did not know, and counted value
issues. Value-mapped variables go through values.csv; derived ones through the derivation
registry (harmonize/derivations.py). No loop here runs per record: per-value work runs over
the distinct values only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ctdc_harmonizer.codebook import BINARY_TRUE, Codebook
from ctdc_harmonizer.columns import (
    FILE,
    INVALID,
    ISSUE_COLUMNS,
    OUTCOME_COLUMNS,
    REJECT,
    REJECT_COLUMN,
    ROW,
    Outcome,
)
from ctdc_harmonizer.harmonize import derivations
from ctdc_harmonizer.harmonize.derivations import UNKNOWN_COLUMNS, Candidate, Derivation
from ctdc_harmonizer.harmonize.unmapped import count_unknown
from ctdc_harmonizer.mapping.spec import PartnerConfig
from ctdc_harmonizer.text import arrow_text, normalize_series, normalize_token, per_distinct

YEAR_VARIABLE = "yearOfRegistration"
HARMONIZED, REJECTED, EXCLUDED = Outcome.HARMONIZED, Outcome.REJECTED, Outcome.EXCLUDED


@dataclass
class MappingResult:
    harmonized: pd.DataFrame  # 27 codebook columns + _file
    outcomes: pd.DataFrame  # one row per staged row: _file, _row, outcome, reason, column
    unmapped: pd.DataFrame  # partner, field, source_value, count
    issues: pd.DataFrame  # partner, field, issue, count
    unknown_rows: pd.DataFrame  # field, rows (rows carrying >= 1 unknown value), for the gate
    # Per staged row and source field: the mapping could not use the value (unknown to it,
    # unreadable). Only fields with such a cell are columns.
    unusable: pd.DataFrame
    # Multi-valued coded fields with an unknown token: each such cell with its unknown tokens
    # replaced by the INVALID marker (the known ones kept, so they map the same again).
    storable: dict[str, pd.Series]

    def storable_values(self, staged: pd.DataFrame, fields: list[str]) -> pd.DataFrame:
        """What the store may keep of `staged` (the frame this result was mapped from): a value
        the mapping could not use becomes the INVALID marker (it may be anything: a name
        typed in the wrong column), known tokens of a multi-valued cell stay."""
        values = staged.reindex(columns=fields).reset_index(drop=True)
        for name in fields:
            if name in self.storable:
                values[name] = self.storable[name].to_numpy()
            elif name in self.unusable.columns:
                values[name] = values[name].mask(self.unusable[name].to_numpy(), INVALID)
        return values


def _coalesce_text(first: pd.Series, then: pd.Series) -> pd.Series:
    """`first.fillna(then)` for text of the same index, by Arrow's coalesce: pandas fills
    Arrow text through a masked replace that cost ~10 ms per 250k-row column."""
    if not first.index.equals(then.index):  # fillna aligns on labels: let pandas do it
        return first.astype("string").fillna(then.astype("string"))
    joined = pc.coalesce(arrow_text(first).combine_chunks(), arrow_text(then).combine_chunks())
    return pd.Series(pd.array(joined, dtype="string"), index=first.index)


def _first_valid(candidates: list[pd.Series], index: pd.Index, dtype: str = "string") -> pd.Series:
    """Coalesce: the first non-null candidate, in the configured order of preference."""
    result = pd.Series(pd.NA, index=index, dtype=dtype)
    for candidate in candidates:
        if dtype == "string":
            result = _coalesce_text(result, candidate)
        else:
            result = result.fillna(candidate.astype(dtype))
    return result


def split_multi(values: pd.Series, delimiter: str, mapped: pd.DataFrame, field: str) -> pd.Series:
    """Split multi-select cells, keeping intact the known values that contain the delimiter
    (two ISIC section labels in the HTCDS picklist contain ';')."""
    protected = [k for k in mapped.loc[mapped["field"] == field, "key"].unique() if delimiter in k]
    placeholders = {f"\x00{i}\x00": key for i, key in enumerate(protected)}
    for placeholder, key in placeholders.items():
        parts = (r"\s+".join(map(re.escape, part.split())) for part in key.split(delimiter))
        pattern = (r"\s*" + re.escape(delimiter) + r"\s*").join(parts)
        values = values.str.replace(f"(?i){pattern}", placeholder, regex=True)
    tokens = values.str.split(delimiter, regex=False).explode()
    for placeholder, key in placeholders.items():
        tokens = tokens.str.replace(placeholder, key, regex=False)
    return tokens


def _tokens(
    frame: pd.DataFrame, config: PartnerConfig, fields: list[str]
) -> tuple[pd.DataFrame, dict]:
    """Long table of the tokens of every DISTINCT cell value per field.

    Returns (long, codes): long has field, uid (the distinct cell), pos (token position),
    token, key, order (field priority), weight (rows holding that cell); codes maps each
    field to the row -> uid array (-1 for an empty cell).
    """
    parts, codes_by_field = [], {}
    for order, name in enumerate(fields):
        spec = config.field(name)
        codes, uniques = pd.factorize(frame[name], use_na_sentinel=True)
        codes_by_field[name] = codes
        distinct = pd.Series(uniques, dtype="string")
        if spec.multi:
            tokens = split_multi(distinct, spec.delimiter, config.values, name)
        else:
            tokens = distinct
        tokens = tokens.astype("string").str.strip()
        uid = tokens.index.to_numpy()
        pos = tokens.groupby(level=0).cumcount().to_numpy()
        keep = (tokens.notna() & (tokens != "")).to_numpy()
        weights = np.bincount(codes[codes >= 0], minlength=len(uniques))
        parts.append(
            pd.DataFrame(
                {
                    "field": name,
                    "uid": uid[keep],
                    "pos": pos[keep],
                    "token": tokens.to_numpy()[keep],
                    "order": order,
                    "weight": weights[uid[keep]],
                }
            )
        )
    columns = ["field", "uid", "pos", "token", "order", "weight", "key"]
    if not parts:
        return pd.DataFrame(columns=columns), codes_by_field
    long = pd.concat(parts, ignore_index=True)
    long["key"] = normalize_series(long["token"])
    return long, codes_by_field


def _spread_hits(hits: pd.DataFrame, codes_by_field: dict, index: pd.Index) -> dict[str, pd.Series]:
    """Per-distinct-cell hits back onto rows; for each variable the earliest field wins."""
    columns: dict[str, pd.Series] = {}
    hits = hits.sort_values(["order", "uid", "pos"], kind="stable").drop_duplicates(
        ["field", "uid", "variable"]
    )
    for (_, field, variable), group in hits.groupby(["order", "field", "variable"], sort=True):
        codes = codes_by_field[field]
        per_uid = np.full(codes.max() + 2 if len(codes) else 1, None, dtype=object)
        per_uid[group["uid"].to_numpy()] = group["value"].to_numpy(dtype=object)
        # Spread by Arrow's take over the distinct cells' values (-1, an empty cell, picks
        # the trailing None): a Python string per row made the column ~8x slower.
        at = np.where(codes < 0, len(per_uid) - 1, codes)
        spread = pa.array(per_uid, type=pa.string()).take(pa.array(at, type=pa.int64()))
        values = pd.Series(pd.array(spread, dtype="string"), index=index)
        columns[variable] = (
            _coalesce_text(columns[variable], values) if variable in columns else values
        )
    return columns


def _storable_multi(
    long: pd.DataFrame, known: np.ndarray, field: str, delimiter: str, codes: np.ndarray
) -> pd.Series:
    """Per row, the multi-valued cell of `field` with its unknown tokens replaced by INVALID."""
    mine = long.loc[(long["field"] == field).to_numpy()].assign(
        known=known[(long["field"] == field).to_numpy()]
    )
    tokens = mine["token"].where(mine["known"], INVALID)
    joined = (
        mine.assign(token=tokens)
        .sort_values(["uid", "pos"], kind="stable")
        .groupby("uid")["token"]
        .agg(delimiter.join)
    )
    per_uid = np.full(codes.max() + 2 if len(codes) else 1, None, dtype=object)
    per_uid[joined.index.to_numpy()] = joined.to_numpy(dtype=object)
    return pd.Series(per_uid[codes], dtype="string")  # -1 (an empty cell) -> trailing None


def _apply_reader_rejects(frame: pd.DataFrame, outcome: pd.DataFrame) -> None:
    """Rows the reader could not read whole (e.g. wrong_type) are rejected with its reason."""
    if REJECT not in frame.columns:
        return
    hit = frame[REJECT].notna().to_numpy()
    if hit.any():
        outcome.loc[hit, "outcome"] = REJECTED
        outcome.loc[hit, "reason"] = frame.loc[hit, REJECT].astype(str).to_numpy()
        outcome.loc[hit, "column"] = frame.loc[hit, REJECT_COLUMN].fillna("").astype(str).to_numpy()


def _apply_inclusion(frame: pd.DataFrame, config: PartnerConfig, outcome: pd.DataFrame) -> None:
    for rule in config.inclusion:
        excluded_keys = {normalize_token(v) for v in rule.exclude}
        keys = per_distinct(frame[rule.field], normalize_series)
        hit = keys.isin(excluded_keys).fillna(False)
        hit &= outcome["outcome"] == HARMONIZED
        outcome.loc[hit, ["outcome", "reason", "column"]] = [EXCLUDED, rule.rule, rule.field]
        # A value the reading could not keep (the store's INVALID marker) cannot say whether
        # the rule applies: never included.
        unreadable = (frame[rule.field] == INVALID).fillna(False) & (
            outcome["outcome"] == HARMONIZED
        )
        outcome.loc[unreadable, ["outcome", "reason", "column"]] = [
            REJECTED,
            f"unreadable_{rule.rule}",
            rule.field,
        ]


def _registration_year(
    candidates: list[Candidate],
    first_field: str,
    outcome: pd.DataFrame,
    year_min: int,
    year_max: int,
) -> pd.Series:
    """The year of registration from its sources; rows without a usable year are rejected."""
    index = outcome.index
    invalid_any = pd.Series(False, index=index)
    for candidate in candidates:
        invalid_any |= candidate.invalid
    year = _first_valid([c.values for c in candidates], index, dtype="Int64")
    open_rows = outcome["outcome"] == HARMONIZED
    missing = open_rows & year.isna() & ~invalid_any
    invalid = open_rows & year.isna() & invalid_any
    out_of_range = open_rows & year.notna() & ((year < year_min) | (year > year_max)).fillna(False)
    for mask, reason in (
        (missing, "missing_year_of_registration"),
        (invalid, "invalid_registration_date"),
        (out_of_range, "year_out_of_range"),
    ):
        outcome.loc[mask, ["outcome", "reason", "column"]] = [REJECTED, reason, first_field]
    return year


def map_partner(
    staged: pd.DataFrame,
    config: PartnerConfig,
    codebook: Codebook,
    year_max: int,
) -> MappingResult:
    """Harmonize one partner's staged rows onto the codebook."""
    frame = staged.reset_index(drop=True)
    year_min = int(config.year_min) if config.year_min is not None else codebook.year_min
    year_max = min(int(config.year_max), year_max) if config.year_max is not None else year_max
    outcome = pd.DataFrame(
        {FILE: frame[FILE], ROW: frame[ROW], "outcome": HARMONIZED, "reason": "", "column": ""}
    )
    _apply_reader_rejects(frame, outcome)
    _apply_inclusion(frame, config, outcome)
    work = Derivation(frame, config, codebook)
    year_sources = config.derive[YEAR_VARIABLE]
    year_candidates = derivations.derive(YEAR_VARIABLE, year_sources, work)
    for source, candidate in zip(year_sources, year_candidates, strict=True):
        if candidate.invalid is not None:  # a present but unreadable year: never stored
            work.mark_unusable(source.field, candidate.invalid)
    year = _registration_year(
        year_candidates,
        year_sources[0].field,
        outcome,
        year_min,
        year_max,
    )
    birthdates = derivations.birthdate_fields(config)
    for spec in config.fields_with_role("date"):
        if spec.name not in birthdates:  # those are counted as invalid_age
            # The cell holds the INVALID marker, not a value: the store may keep it.
            work.add_issue(spec.name, "invalid_date", frame[spec.name] == INVALID, unusable=False)

    # Value-mapped variables (gender, means of control, exploitation, labour, sex, recruiter).
    long, codes_by_field = _tokens(
        frame, config, [f.name for f in config.fields_with_role("coded")]
    )
    known = pd.MultiIndex.from_frame(long[["field", "key"]]).isin(
        pd.MultiIndex.from_frame(config.values[["field", "key"]])
    )
    # The INVALID marker (a cell the reader could not read exactly, or a value the store could
    # not keep) is no value the mapping could learn: a counted value issue, not an unknown.
    invalid = (long["token"] == INVALID).to_numpy()
    unknown = ~known & ~invalid
    work.unknown.append(
        long.loc[unknown, ["field", "token", "weight"]].assign(gid=long.loc[unknown, "uid"])
    )
    for name, uids in long.loc[invalid].groupby("field")["uid"]:
        hit = pd.Series(np.isin(codes_by_field[name], uids.to_numpy()))
        work.add_issue(name, "unreadable_value", hit, unusable=False)
    storable = {}
    for name, uids in long.loc[~known].groupby("field")["uid"]:
        hit = np.isin(codes_by_field[name], uids.to_numpy())
        spec = config.field(name)
        if spec.multi:  # keep the known tokens: they map again as they did
            storable[name] = _storable_multi(
                long, known, name, spec.delimiter, codes_by_field[name]
            )
        else:
            work.mark_unusable(name, pd.Series(hit))
    merged = long[known].merge(config.values, on=["field", "key"], how="inner")
    coded = _spread_hits(merged[merged["variable"] != ""], codes_by_field, frame.index)

    # Derived variables (the registry), each the first usable value of its sources.
    derived: dict[str, pd.Series] = {YEAR_VARIABLE: year}
    for variable, sources in config.derive.items():
        if variable != YEAR_VARIABLE:
            candidates = derivations.derive(variable, sources, work)
            derived[variable] = _first_valid([c.values for c in candidates], frame.index)

    result = pd.DataFrame(index=frame.index)
    for var in codebook.variables:
        column = derived.get(var.name, coded.get(var.name))
        if column is None:
            column = pd.Series(pd.NA, index=frame.index)
        result[var.name] = column.astype("Int64" if var.type == "year" else "string")
    for name in codebook.binary_columns:  # `where(== BINARY_TRUE)`, in Arrow (see above)
        text = arrow_text(result[name]).combine_chunks()
        kept = pc.if_else(pc.equal(text, BINARY_TRUE), text, pa.scalar(None, pa.string()))
        result[name] = pd.Series(pd.array(kept, dtype="string"), index=result.index)
    result[FILE] = frame[FILE]

    # Unknown values are reported whatever the row's outcome: the mapping should know them.
    unknown_long = pd.concat(
        [p for p in work.unknown if not p.empty] or [pd.DataFrame(columns=UNKNOWN_COLUMNS)],
        ignore_index=True,
    )
    unmapped, unknown_rows = count_unknown(unknown_long, config.code)
    keep = outcome["outcome"] == HARMONIZED
    return MappingResult(
        harmonized=result.loc[keep].reset_index(drop=True),
        outcomes=outcome[OUTCOME_COLUMNS],
        unmapped=unmapped,
        issues=pd.DataFrame(work.issues, columns=ISSUE_COLUMNS),
        unknown_rows=unknown_rows,
        unusable=pd.DataFrame(
            {name: mask.to_numpy(dtype=bool) for name, mask in work.unusable.items()},
            index=frame.index,
        ),
        storable=storable,
    )
