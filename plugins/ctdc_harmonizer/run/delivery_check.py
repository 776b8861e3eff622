"""`ctdc check-delivery`: what a partner runs on its own machine before sending a delivery.

The same reading, de-identification, withdrawal matching, duplicate merging and mapping as
the partner chain of the annual update (pipeline/annual_update/partner_chain.py), in memory,
on the files the partner names, and the same receipt (release/receipts.py). Nothing is sent,
no warehouse, no pseudonym key and no Airflow are needed (this module must not import them):
what the central run adds (the store, earlier deliveries) is said in the receipt's notes.

Problems that stop the central run (a file it cannot read, a column missing, a withdrawal
that cannot be applied, the partner's contract broken, the coverage gate) are collected per
file, not raised at the first one: the partner sees every located problem in one go. Rejected
rows are not problems: the run harmonizes the rest of the delivery and the receipt locates
them by file, column, reason and row number.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ctdc_harmonizer.columns import FILE, ROW, Outcome
from ctdc_harmonizer.errors import CtdcError, ExtractError
from ctdc_harmonizer.mapping.spec import PartnerConfig
from ctdc_harmonizer.release.receipts import Problem, Receipt, ReceiptFiles

UNMATCHED_WITHDRAWALS = (
    "{n} withdrawal(s) match no row of these files: the central run applies them to the "
    "records you delivered earlier and stops if one matches nothing there either"
)


@dataclass(frozen=True)
class DeliveryCheck:
    receipt: Receipt
    files: ReceiptFiles | None  # where the receipt was written (None: not asked to)


def _problem(exc: Exception, fallback_file: str | None = None) -> Problem:
    """A located problem from a value-free error (never its arguments, never a value)."""
    from ctdc_harmonizer.safety import describe

    if isinstance(exc, ExtractError):
        return Problem(file=Path(exc.file).name, column=exc.column, row=exc.row, reason=exc.problem)
    return Problem(file=fallback_file, reason=describe(exc))


def delivered_paths(
    config: PartnerConfig, given: list[Path]
) -> tuple[list[Path], Path | None, list[Problem], list[str]]:
    """The extract files, the withdrawals file, problems and notes from what the partner
    named: files, or folders (a folder holding `<partner>/` stands for that sub-folder).

    The rules are the run's (ingest/files.py): a file must match the mapping's file patterns
    (a named file that does not is a problem, an extra file in a folder is a note), links are
    refused, one withdrawals file at most."""
    from ctdc_harmonizer.ingest.files import SYMLINK_PROBLEM
    from ctdc_harmonizer.ingest.withdrawals import is_withdrawals_file

    named: list[tuple[Path, bool]] = []  # (path, named by the partner itself)
    problems: list[Problem] = []
    notes: list[str] = []
    for path in given:
        if path.is_dir() and (path / config.code).is_dir():
            path = path / config.code
        if path.is_dir():
            named += [(p, False) for p in sorted(path.iterdir())]
        elif path.exists() or path.is_symlink():
            named.append((path, True))
        else:
            problems.append(Problem(file=path.name, reason="not found"))
    patterns = config.reader.files
    files, withdrawals = [], []
    for path, explicit in named:
        if path.name.startswith(("~$", ".")):
            continue  # Office lock files, hidden files: the run skips them too
        if path.is_symlink():
            problems.append(Problem(file=path.name, reason=SYMLINK_PROBLEM))
        elif is_withdrawals_file(path):
            withdrawals.append(path)
        elif not any(fnmatch.fnmatch(path.name, pattern) for pattern in patterns):
            why = f"does not match the mapping's file patterns ({', '.join(patterns)})"
            if explicit:
                problems.append(Problem(file=path.name, reason=f"{why}: the run would not read it"))
            else:
                notes.append(f"file {path.name} not read: {why}")
        elif not path.is_file():
            problems.append(
                Problem(file=path.name, reason="matches the patterns but is not a file")
            )
        else:
            files.append(path)
    if len(withdrawals) > 1:
        problems.append(
            Problem(file=withdrawals[1].name, reason="a second withdrawals file: send one only")
        )
    if not files and not withdrawals and not problems:
        problems.append(Problem(reason=f"no file matches {', '.join(patterns)}"))
    return files, (withdrawals[0] if withdrawals else None), problems, notes


def check_delivery(
    partner: str,
    paths: list[str | Path],
    mappings: str | Path | None = None,
    out: str | Path | None = None,
    release_year: int | None = None,
) -> DeliveryCheck:
    """Check a delivery as the annual update would take it; the receipt, written to `out`
    (receipt.json + receipt.html) when given."""
    from ctdc_harmonizer.codebook import default_codebook
    from ctdc_harmonizer.harmonize import contracts
    from ctdc_harmonizer.harmonize.coverage import coverage_report
    from ctdc_harmonizer.harmonize.mapper import map_partner
    from ctdc_harmonizer.harmonize.unmapped import restrict_unmapped
    from ctdc_harmonizer.ingest.deidentify import deidentify
    from ctdc_harmonizer.ingest.duplicates import duplicate_rows
    from ctdc_harmonizer.ingest.extract import read_extract
    from ctdc_harmonizer.ingest.withdrawals import (
        erased_rows,
        is_in,
        match_columns,
        match_keys,
        read_withdrawals,
    )
    from ctdc_harmonizer.mapping.partner import load_partner
    from ctdc_harmonizer.paths import mappings_dir
    from ctdc_harmonizer.release import receipts
    from ctdc_harmonizer.run.plan import default_release_label, release_year_of

    config = load_partner(Path(mappings or mappings_dir()) / partner)
    today = dt.date.today()
    year = release_year or release_year_of(default_release_label(today), today.year)
    codebook = default_codebook()
    files, withdrawals_path, problems, notes = delivered_paths(config, [Path(p) for p in paths])
    withdrawals = None
    if withdrawals_path is not None:
        try:
            withdrawals = read_withdrawals(config, withdrawals_path)
        except CtdcError as exc:
            problems.append(_problem(exc, withdrawals_path.name))
    info: dict[str, dict] = {}
    frames, keys = [], []
    for path in files:
        try:
            result = read_extract(config, path, also=match_columns(withdrawals))
            keys.append(match_keys(withdrawals, result.frame))
            frames.append(deidentify(config, result.frame))
        except CtdcError as exc:  # this file cannot be taken; the others are still checked
            problems.append(_problem(exc, path.name))
            info[path.name] = {"rows_read": 0, "size_bytes": path.stat().st_size}
            continue
        info[result.file] = {
            "sha256": result.sha256,
            "size_bytes": path.stat().st_size,
            "rows_read": len(result.frame),
            "blank_rows_skipped": result.blank_rows,
        }
    staged = pd.concat(frames, ignore_index=True) if frames else None
    outcomes = pd.DataFrame(columns=[FILE, ROW, "outcome", "reason", "column"])
    removed = pd.DataFrame(columns=[FILE, ROW, "outcome"])
    unmapped = issues = pd.DataFrame()
    coverage = None
    if staged is not None:
        fate = pd.Series("", index=staged.index, dtype="string")
        if withdrawals is not None:
            # Here every withdrawal may match a record delivered earlier (the store has it).
            honoured = pd.Series(True, index=withdrawals.keys.index)
            fate[erased_rows(withdrawals, keys, honoured)] = Outcome.ERASED
            delivered = pd.concat(keys, ignore_index=True)
            unmatched = int((~is_in(withdrawals.keys, delivered)).sum())
            if unmatched:
                notes.append(UNMATCHED_WITHDRAWALS.format(n=unmatched))
        if config.record_id:
            fate[duplicate_rows(staged[config.record_id], live=fate == "")] = (
                Outcome.DUPLICATES_MERGED
            )
            staged = staged.drop(columns=[config.record_id])
        live = (fate == "").to_numpy()
        removed = staged.loc[~live, [FILE, ROW]].assign(outcome=fate[~live])
        staged = staged.loc[live].reset_index(drop=True)
        try:
            contracts.validate(
                contracts.staged_schema(config), staged, where=f"partner '{partner}' extract"
            )
            mapped = map_partner(staged, config, codebook, year)
            contracts.validate(
                contracts.harmonized_schema_for(codebook, year),
                mapped.harmonized[codebook.columns],
                where=f"partner '{partner}' harmonized rows",
            )
        except CtdcError as exc:
            problems.append(_problem(exc))
        else:
            outcomes = mapped.outcomes
            rows = len(staged)
            unmapped = restrict_unmapped(
                mapped.unmapped,
                mapped.unknown_rows,
                rows,
                config.coded_fields,
                config.unmapped_min_rows,
            )
            issues = mapped.issues
            coverage = coverage_report(mapped.unknown_rows, rows, config)
            shares = {f["field"]: f for f in coverage["fields"]}
            for field in coverage["failing_fields"]:
                item = shares[field]
                problems.append(
                    Problem(
                        column=field,
                        reason=f"coverage: {item['rows']} of {rows} rows ({item['share']:.2%}) "
                        "hold values the mapping does not know, above the threshold "
                        f"({coverage['threshold']:.2%}); add them to the mapping or fix the "
                        "column",
                    )
                )
    notes.append(
        "a check on your machine: nothing was sent; the central run also compares the "
        "delivery with the records you delivered before (new, revised, unchanged)"
    )
    receipt = receipts.build_receipt(
        kind="check",
        partner=partner,
        release=None,
        files=info,
        outcomes=outcomes,
        removed=removed,
        unmapped=unmapped,
        issues=issues,
        coverage=coverage,
        unmapped_min_rows=config.unmapped_min_rows,
        problems=problems,
        notes=notes,
    )
    written = receipts.write_receipt(receipt, out) if out is not None else None
    return DeliveryCheck(receipt=receipt, files=written)
