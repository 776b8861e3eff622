"""The receipt a partner reads: what became of its delivery, counts and row numbers only.

One receipt per delivery (per partner that delivered in a run), built from what the partner's
chain already wrote (run/workdir.py `PartnerWork`: stage info, row outcomes, removed rows, the
restricted unmapped list, value issues, coverage) or, by `ctdc check-delivery`, from the same
tables computed on the partner's own machine (run/delivery_check.py). Both write it the same
way: `receipt.json` (schema `SCHEMA_VERSION`) and `receipt.html` (self-contained, no script,
no remote resource), in a folder readable by its owner only.

PRIVACY: a receipt holds, for ONE partner: file names, checksums and sizes; rows read,
harmonized, rejected (per file, column and reason code, with row numbers: they locate a row
in the partner's own file, they are not values), excluded (per inclusion rule), erased
(withdrawals) and merged duplicates; after a run, what the delivery did to the partner's
records in the store (counts: added, revised, retired, erased, released, held back, merged
with another partner's record); value-issue and coverage counts; and the unmapped list
under the restricted rules (harmonize/unmapped.py: a coded value seen in at least k rows,
never free text, contact-like or rare values: those are counted only). Never a value of a
record, a pseudonym, or anything of another partner.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

from ctdc_harmonizer.columns import FILE, ROW, Outcome
from ctdc_harmonizer.fileio import private_folder
from ctdc_harmonizer.store.changes import (
    FULL,
    INCREMENTAL,
    NOT_REDELIVERED,
    REHARMONIZED_EXCLUDED,
    REVISION_EXCLUDED,
)

if TYPE_CHECKING:
    import pandas as pd

    from ctdc_harmonizer.run.workdir import PartnerWork

SCHEMA_VERSION = 2  # 2: `records`, what the delivery did to the partner's records
RECEIPTS_FOLDER = "receipts"  # <out>/receipts/<release>/<partner>/
JSON_NAME = "receipt.json"
HTML_NAME = "receipt.html"
ROW_RANGES_SHOWN = 200  # in the page and on stdout; receipt.json always has every row number


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Counts(_Model):
    """Where a file's rows went: rows_read = harmonized + rejected + excluded + erased +
    duplicates_merged (blank rows are skipped before reading, not counted as read)."""

    rows_read: int = 0
    harmonized: int = 0
    rejected: int = 0
    excluded: int = 0
    erased: int = 0
    duplicates_merged: int = 0

    @property
    def reconciles(self) -> bool:
        accounted = (
            self.harmonized + self.rejected + self.excluded + self.erased + self.duplicates_merged
        )
        return self.rows_read == accounted


class FileReceipt(Counts):
    file: str
    sha256: str | None = None
    size_bytes: int | None = None
    blank_rows_skipped: int = 0
    # After a run only: of the harmonized rows, records new to the store, revised, unchanged.
    new: int | None = None
    revised: int | None = None
    unchanged: int | None = None


class RejectedRows(_Model):
    """Rows of one file rejected for one reason in one column, located by row number."""

    file: str
    column: str
    reason: str
    rows: int
    row_numbers: list[int]


class ExcludedRows(_Model):
    """Rows left out by one inclusion rule (e.g. consent refused), counted."""

    file: str
    rule: str
    column: str
    rows: int


class UnmappedValue(_Model):
    """A value the mapping does not know (restricted rules), or a counted withheld line
    (`source_value` empty, `note` says how many and why)."""

    field: str
    source_value: str
    rows: int
    note: str


class ValueIssue(_Model):
    """Rows where a variable was set to NULL for a counted reason (e.g. unreadable date)."""

    field: str
    issue: str
    rows: int


class CoverageField(_Model):
    field: str
    rows: int  # rows with a value the mapping does not know in this field
    share: float
    failing: bool  # above the partner's coverage threshold: the run stops


class Problem(_Model):
    """Something that stops the delivery being taken: located, never quoted."""

    file: str | None = None
    column: str | None = None
    row: int | None = None
    reason: str


class PartnerRecords(_Model):
    """After a run: what the delivery did to the partner's records in the dataset (the
    release's partner ledger, reconciliation.json): previous + added - retired - erased =
    current; current = released + held_back + merged."""

    mode: str  # full: records the delivery no longer holds are retired; incremental: kept
    previous: int
    added: int
    revised: int
    retired: dict[str, int]  # by reason (RETIRED_WORDS: store/changes.py's reasons)
    erased: int
    current: int
    released: int
    held_back: int
    merged: int  # left out of the release: the same person as another partner's record

    @classmethod
    def from_ledger(cls, ledger: dict) -> PartnerRecords:
        records = ledger["records"]
        return cls(
            mode=str(ledger.get("mode") or ""),
            **{
                key: int(records[key]) for key in cls.model_fields if key not in {"mode", "retired"}
            },
            retired={str(k): int(v) for k, v in sorted(records["retired"].items())},
        )


# Why a record was retired, for the partner reading it.
RETIRED_WORDS = {
    NOT_REDELIVERED: "not in this full extract",
    REVISION_EXCLUDED: "now left out by an inclusion rule (e.g. consent refused)",
    REHARMONIZED_EXCLUDED: "left out by an inclusion rule when harmonized again",
}


class Receipt(_Model):
    schema_version: int = SCHEMA_VERSION
    kind: Literal["run", "check"]  # after a run of the annual update / ctdc check-delivery
    partner: str
    release: str | None  # the release the run built (None for a check)
    generated_at: str
    files: list[FileReceipt]
    totals: Counts
    reconciles: bool
    rejected: list[RejectedRows]
    excluded: list[ExcludedRows]
    unmapped: list[UnmappedValue]
    unmapped_min_rows: int
    value_issues: list[ValueIssue]
    coverage_threshold: float | None
    coverage: list[CoverageField]
    problems: list[Problem]
    notes: list[str]
    records: PartnerRecords | None = None  # a run only (schema version 2 and later)

    @property
    def ok(self) -> bool:
        """True when the delivery can be taken as it is (rejected rows are counted, not
        fatal: the rest of the delivery is harmonized)."""
        return not self.problems and self.reconciles


@dataclass(frozen=True)
class ReceiptFiles:
    """Where one receipt was written."""

    json_path: Path
    html_path: Path


# --- building ----------------------------------------------------------------------------


def build_receipt(
    *,
    kind: Literal["run", "check"],
    partner: str,
    release: str | None,
    files: dict[str, dict],
    outcomes: pd.DataFrame,
    removed: pd.DataFrame,
    unmapped: pd.DataFrame,
    issues: pd.DataFrame,
    coverage: dict | None,
    unmapped_min_rows: int,
    problems: list[Problem] | None = None,
    notes: list[str] | None = None,
    store_counts: dict[str, dict] | None = None,
    records: PartnerRecords | None = None,
) -> Receipt:
    """A partner's receipt from its chain's tables (delivered rows only).

    files: per delivered file, its stage info (sha256, size_bytes, rows_read,
    blank_rows_skipped); outcomes: per delivered staged row FILE, ROW, outcome, reason,
    column; removed: per row erased or merged while staging FILE, ROW, outcome; unmapped:
    the restricted list (UNMAPPED_REPORT_COLUMNS, already restricted); issues:
    ISSUE_COLUMNS; coverage: harmonize/coverage.py's report; store_counts: per file, the
    release ledger's new / revised / unchanged; records: the partner's records before and
    after (both a run only)."""
    per_file = {name: dict.fromkeys(Counts.model_fields, 0) for name in files}
    for name, info in files.items():
        per_file[name]["rows_read"] = int(info.get("rows_read", 0))
    for frame in (outcomes, removed):
        if len(frame):
            counted = frame.groupby([FILE, "outcome"]).size()
            for (name, outcome), n in counted.items():
                per_file.setdefault(name, dict.fromkeys(Counts.model_fields, 0))
                per_file[name][str(outcome)] += int(n)
    file_receipts = [
        FileReceipt(
            file=name,
            sha256=files.get(name, {}).get("sha256"),
            size_bytes=files.get(name, {}).get("size_bytes"),
            blank_rows_skipped=int(files.get(name, {}).get("blank_rows_skipped", 0)),
            **{
                key: (store_counts or {}).get(name, {}).get(key)
                for key in ("new", "revised", "unchanged")
            },
            **counts,
        )
        for name, counts in sorted(per_file.items())
    ]
    totals = Counts(
        **{key: sum(getattr(f, key) for f in file_receipts) for key in Counts.model_fields}
    )
    rejected, excluded = [], []
    if len(outcomes):
        bad = outcomes[outcomes["outcome"] == Outcome.REJECTED]
        for (name, column, reason), group in bad.groupby([FILE, "column", "reason"]):
            rejected.append(
                RejectedRows(
                    file=str(name),
                    column=str(column),
                    reason=str(reason),
                    rows=len(group),
                    row_numbers=sorted(int(r) for r in group[ROW]),
                )
            )
        out = outcomes[outcomes["outcome"] == Outcome.EXCLUDED]
        for (name, rule, column), group in out.groupby([FILE, "reason", "column"]):
            excluded.append(
                ExcludedRows(file=str(name), rule=str(rule), column=str(column), rows=len(group))
            )
    unmapped_list = [
        UnmappedValue(
            field=str(row["field"]),
            source_value=str(row["source_value"]),
            rows=int(row["count"]),
            note=str(row["note"]),
        )
        for row in (unmapped.fillna("").to_dict("records") if len(unmapped) else [])
        if str(row.get("partner", partner)) == partner  # never another partner's line
    ]
    value_issues = [
        ValueIssue(field=str(row["field"]), issue=str(row["issue"]), rows=int(row["count"]))
        for row in (issues.to_dict("records") if len(issues) else [])
        if str(row.get("partner", partner)) == partner
    ]
    coverage = coverage or {}
    failing = set(coverage.get("failing_fields", []))
    coverage_fields = [
        CoverageField(
            field=item["field"],
            rows=int(item["rows"]),
            share=float(item["share"]),
            failing=item["field"] in failing,
        )
        for item in coverage.get("fields", [])
    ]
    return Receipt(
        kind=kind,
        partner=partner,
        release=release,
        generated_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        files=file_receipts,
        totals=totals,
        reconciles=all(f.reconciles for f in file_receipts),
        rejected=rejected,
        excluded=excluded,
        unmapped=unmapped_list,
        unmapped_min_rows=unmapped_min_rows,
        value_issues=value_issues,
        coverage_threshold=coverage.get("threshold"),
        coverage=coverage_fields,
        problems=list(problems or []),
        notes=list(notes or []),
        records=records,
    )


def receipt_from_work(
    work: PartnerWork,
    release: str,
    unmapped_min_rows: int,
    ledger: dict | None = None,
) -> Receipt:
    """A run's receipt for one partner, from what its chain wrote in its work folder
    (stage_partner and harmonize_partner): its delivered rows only, not the stored records
    harmonized again with them. `ledger`: the partner's ledger in the release's
    reconciliation (per file new / revised / unchanged, the partner's records)."""
    from ctdc_harmonizer.columns import FROM_DELIVERY, ORIGIN

    stage = work.read_json(work.STAGE_INFO)
    outcomes = work.read_frame(work.OUTCOMES)
    outcomes = outcomes[outcomes[ORIGIN] == FROM_DELIVERY]
    notes = [f"file {name} not read: {why}" for name, why in sorted(stage["not_read"].items())]
    return build_receipt(
        kind="run",
        partner=work.partner,
        release=release,
        files=stage.get("files", {}),
        outcomes=outcomes,
        removed=work.read_frame(work.REMOVED),
        unmapped=work.read_table(work.UNMAPPED),
        issues=work.read_table(work.ISSUES),
        coverage=work.read_json(work.COVERAGE),
        unmapped_min_rows=unmapped_min_rows,
        notes=notes,
        store_counts=(ledger or {}).get("files"),
        records=PartnerRecords.from_ledger(ledger) if ledger else None,
    )


# --- writing -----------------------------------------------------------------------------


def receipt_folder(out: str | Path, release: str, partner: str) -> Path:
    """Where a run's receipt for `partner` is written: `<out>/receipts/<release>/<partner>/`."""
    return Path(out) / RECEIPTS_FOLDER / release / partner


def write_receipt(receipt: Receipt, folder: str | Path) -> ReceiptFiles:
    """Write `receipt.json` and `receipt.html` into `folder` (created owner-only when new;
    files owner-only). Each file is replaced atomically; nothing else in the folder is
    touched (`ctdc check-delivery --out` may name any folder of the partner's)."""
    folder = Path(folder)
    if not folder.is_dir():
        private_folder(folder)
    payload = json.dumps(receipt.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    for name, text in ((JSON_NAME, payload), (HTML_NAME, render_html(receipt))):
        descriptor, aside = tempfile.mkstemp(prefix=f".{name}.", dir=folder)  # 0600
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(aside, folder / name)
        except BaseException:
            Path(aside).unlink(missing_ok=True)
            raise
    return ReceiptFiles(json_path=folder / JSON_NAME, html_path=folder / HTML_NAME)


def remove_other_receipts(out: str | Path, release: str, keep: set[str]) -> list[str]:
    """Delete the release's receipts of partners not in `keep` (left by an earlier run of
    the same release); the partners whose receipts were removed."""
    folder = Path(out) / RECEIPTS_FOLDER / release
    if not folder.is_dir():
        return []
    gone = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name not in keep)
    for name in gone:
        shutil.rmtree(folder / name)
    return gone


def read_receipt(path: str | Path) -> Receipt:
    """A receipt written by `write_receipt` (its folder or its receipt.json)."""
    path = Path(path)
    if path.is_dir():
        path = path / JSON_NAME
    return Receipt.model_validate_json(path.read_text(encoding="utf-8"))


# --- reading it: text and page -------------------------------------------------------------


def row_ranges(rows: list[int], limit: int = ROW_RANGES_SHOWN) -> str:
    """Row numbers as ranges ("2-5, 9"), the first `limit` ranges, then how many more rows."""
    ranges: list[tuple[int, int]] = []
    for row in rows:
        if ranges and row == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], row)
        else:
            ranges.append((row, row))
    shown = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges[:limit])
    if len(ranges) > limit:
        rest = sum(b - a + 1 for a, b in ranges[limit:])
        shown += f", ... and {rest} more row(s) (receipt.json lists them all)"
    return shown


def _title(receipt: Receipt) -> str:
    if receipt.kind == "check":
        return f"Delivery check for partner {receipt.partner} (nothing was sent)"
    return f"Delivery receipt for partner {receipt.partner}, release {receipt.release}"


def receipt_text(receipt: Receipt, limit: int = 20) -> str:
    """The receipt as a few lines for a terminal (at most `limit` lines per list)."""
    t = receipt.totals
    lines = [
        _title(receipt),
        f"  rows read {t.rows_read}: {t.harmonized} harmonized, {t.rejected} rejected, "
        f"{t.excluded} excluded, {t.erased} erased (withdrawals), {t.duplicates_merged} "
        f"duplicates merged; {'reconciles' if receipt.reconciles else 'DOES NOT RECONCILE'}",
    ]
    for f in receipt.files:
        lines.append(
            f"  file {f.file}: {f.rows_read} read, {f.harmonized} harmonized, {f.rejected} "
            f"rejected, {f.excluded} excluded, {f.erased} erased"
            + (
                f" ({f.new} new, {f.revised} revised, {f.unchanged} unchanged in the store)"
                if f.new is not None
                else ""
            )
        )
    if receipt.records is not None:
        lines.append(f"  your records: {records_sentence(receipt.records, receipt.release)}")
    sections = [
        (
            "problems (the delivery cannot be taken as it is)",
            [
                f"partner {receipt.partner}, file {p.file or '-'}, column {p.column or '-'}, "
                f"row {p.row if p.row is not None else '-'}: {p.reason}"
                for p in receipt.problems
            ],
        ),
        (
            "rejected rows (by file, column and reason)",
            [
                f"{r.file}, column {r.column}: {r.reason}, {r.rows} row(s): "
                f"{row_ranges(r.row_numbers, 10)}"
                for r in receipt.rejected
            ],
        ),
        (
            "excluded rows (by inclusion rule)",
            [f"{e.file}, column {e.column}: {e.rule}, {e.rows} row(s)" for e in receipt.excluded],
        ),
        (
            f"values the mapping does not know (coded, seen in {receipt.unmapped_min_rows}+ rows)",
            [
                f"{u.field}: {u.source_value!r} in {u.rows} row(s)"
                if not u.note
                else f"{u.field}: {u.note} ({u.rows} row(s))"
                for u in receipt.unmapped
            ],
        ),
        (
            "value issues (variable set to NULL)",
            [f"{i.field}: {i.issue}, {i.rows} row(s)" for i in receipt.value_issues],
        ),
    ]
    for heading, items in sections:
        if not items:
            continue
        lines.append(f"  {heading}:")
        lines.extend(f"    - {item}" for item in items[:limit])
        if len(items) > limit:
            lines.append(f"    ... and {len(items) - limit} more (see the receipt files)")
    lines.extend(f"  note: {note}" for note in receipt.notes)
    return "\n".join(lines)


def _retired_text(retired: dict[str, int]) -> str:
    shown = [f"{n} {RETIRED_WORDS.get(reason, reason)}" for reason, n in retired.items() if n]
    return f" ({'; '.join(shown)})" if shown else ""


def records_sentence(records: PartnerRecords, release: str | None) -> str:
    """What the delivery did to the partner's records, in one sentence of counts."""
    r = records
    return (
        f"{r.previous} before this release, {r.added} added, {r.revised} revised, "
        f"{sum(r.retired.values())} retired{_retired_text(r.retired)}, {r.erased} erased "
        f"(withdrawals): {r.current} now; {r.released} in release {release}, {r.held_back} "
        f"held back, {r.merged} left out as the same person as another partner's record"
    )


def _records_section(receipt: Receipt) -> list[str]:
    """The delivery's effect on the partner's records in the dataset (a run only)."""
    r = receipt.records
    if r is None:
        return []
    mode = {
        FULL: "a full extract: your records it no longer holds were retired from the "
        "dataset (they stay in its history, not in releases)",
        INCREMENTAL: "an increment: your records it does not hold were kept as they were",
    }.get(r.mode, f"delivery mode {r.mode}")
    rows = [
        ["records before this release", r.previous],
        ["added (new in this delivery)", r.added],
        ["revised (a new version replaces the stored one)", r.revised],
        *[[f"retired: {RETIRED_WORDS.get(reason, reason)}", n] for reason, n in r.retired.items()],
        ["stored records erased (withdrawals)", r.erased],
        ["records now", r.current],
        [f"of them in release {receipt.release}", r.released],
        ["held back (kept, not released: harmonized again in a later release)", r.held_back],
        ["left out as the same person as another partner's record", r.merged],
    ]
    return [
        "<h2>Your records in the dataset</h2>",
        f"<p class='small'>This delivery was {html.escape(mode)}. Before + added - retired - "
        "erased = now; now = in the release + held back + left out.</p>",
        _table(["", "records"], rows, numeric={1}),
    ]


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem;color:#1b1b1b}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}th,td{border:1px solid #bbb;
padding:.25rem .6rem;text-align:left;vertical-align:top}th{background:#eee}
td.n{text-align:right}.bad{color:#a40000;font-weight:bold}.ok{color:#006100;font-weight:bold}
.small{color:#555;font-size:.9em}
td.hash{font-family:monospace;font-size:.8em;word-break:break-all;min-width:12em;max-width:18em}
"""


def _table(
    headers: list[str],
    rows: list[list[object]],
    numeric: set[int] = frozenset(),
    hashes: set[int] = frozenset(),
) -> str:
    """`numeric` columns align right; `hashes` wrap (a SHA-256 would widen the page past a
    laptop's screen)."""
    if not rows:
        return "<p class='small'>none</p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)

    def cell(i: int, value: object) -> str:
        kind = " class='n'" if i in numeric else " class='hash'" if i in hashes else ""
        return f"<td{kind}>{html.escape(str(value))}</td>"

    body = "".join(
        "<tr>" + "".join(cell(i, c) for i, c in enumerate(row)) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(receipt: Receipt) -> str:
    """A self-contained page (inline style, no script, nothing fetched): every text escaped."""
    t = receipt.totals
    status = (
        "<p class='ok'>The delivery can be taken as it is.</p>"
        if receipt.ok
        else "<p class='bad'>The delivery cannot be taken as it is: see the problems below.</p>"
    )
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
        "style-src 'unsafe-inline'\">",
        f"<title>{html.escape(_title(receipt))}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(_title(receipt))}</h1>",
        f"<p class='small'>generated {html.escape(receipt.generated_at)}; receipt schema "
        f"version {receipt.schema_version}. Counts and row numbers of your own files only: "
        "no value of any record is shown, except coded values your mapping does not know "
        f"that at least {receipt.unmapped_min_rows} rows hold.</p>",
        status,
        "<h2>Rows</h2>",
        _table(
            [
                "file",
                "rows read",
                "harmonized",
                "rejected",
                "excluded",
                "erased",
                "merged dup.",
                "blank rows skipped",
                "SHA-256",
                "bytes",
            ],  # fmt: skip
            [
                [
                    f.file,
                    f.rows_read,
                    f.harmonized,
                    f.rejected,
                    f.excluded,
                    f.erased,
                    f.duplicates_merged,
                    f.blank_rows_skipped,
                    f.sha256 or "",
                    f.size_bytes or "",
                ]  # fmt: skip
                for f in receipt.files
            ]
            + [
                [
                    "all files",
                    t.rows_read,
                    t.harmonized,
                    t.rejected,
                    t.excluded,
                    t.erased,
                    t.duplicates_merged,
                    "",
                    "",
                    "",
                ]  # fmt: skip
            ],
            numeric={1, 2, 3, 4, 5, 6, 7, 9},
            hashes={8},
        ),
        "<p>"
        + (
            "Every row read is accounted for (read = harmonized + rejected + excluded + "
            "erased + merged duplicates)."
            if receipt.reconciles
            else "<span class='bad'>The counts do not reconcile.</span>"
        )
        + "</p>",
    ]
    parts += _records_section(receipt)
    if receipt.problems:
        parts += [
            "<h2 class='bad'>Problems</h2>",
            _table(
                ["file", "column", "row", "reason"],
                [[p.file or "", p.column or "", p.row or "", p.reason] for p in receipt.problems],
            ),
        ]
    parts += [
        "<h2>Rejected rows</h2><p class='small'>By file, column and reason code; row numbers "
        "as in your file.</p>",
        _table(
            ["file", "column", "reason", "rows", "row numbers"],
            [
                [r.file, r.column, r.reason, r.rows, row_ranges(r.row_numbers)]
                for r in receipt.rejected
            ],
            numeric={3},
        ),
        "<h2>Excluded rows</h2><p class='small'>Left out by an inclusion rule of your "
        "mapping (e.g. consent refused), counted.</p>",
        _table(
            ["file", "column", "rule", "rows"],
            [[e.file, e.column, e.rule, e.rows] for e in receipt.excluded],
            numeric={3},
        ),
        "<h2>Values your mapping does not know</h2>"
        f"<p class='small'>A value is shown only when its field is declared coded and at least "
        f"{receipt.unmapped_min_rows} rows hold it; the others are counted only.</p>",
        _table(
            ["field", "value", "rows", "note"],
            [[u.field, u.source_value, u.rows, u.note] for u in receipt.unmapped],
            numeric={2},
        ),
        "<h2>Value issues</h2><p class='small'>Rows kept, with this variable left empty.</p>",
        _table(
            ["field", "issue", "rows"],
            [[i.field, i.issue, i.rows] for i in receipt.value_issues],
            numeric={2},
        ),
    ]
    if receipt.coverage:
        threshold = receipt.coverage_threshold
        parts += [
            "<h2>Coverage</h2><p class='small'>Share of rows with a value the mapping does not "
            f"know, per field (threshold {threshold:.2%}).</p>"
            if threshold is not None
            else "<h2>Coverage</h2>",
            _table(
                ["field", "rows", "share", "above threshold"],
                [
                    [c.field, c.rows, f"{c.share:.2%}", "yes" if c.failing else ""]
                    for c in receipt.coverage
                ],
                numeric={1, 2},
            ),
        ]
    if receipt.notes:
        items = "".join(f"<li>{html.escape(n)}</li>" for n in receipt.notes)
        parts.append(f"<h2>Notes</h2><ul>{items}</ul>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
