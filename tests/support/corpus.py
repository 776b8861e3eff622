"""The bad-input corpus harness (issue 6, item 8).

A case starts from a copy of a small seeded sample landing, mutates it (files, mapping
copy, run options, out folder state), plants invented identifiers in the mutated spots,
runs `ctdc run` and checks the project's promises:

(a) the exit code the issue implies (None where the issue leaves the outcome open);
(b) no Python traceback;
(c) on failure a `ctdc: error:` line that names partner, file, column and/or line;
(d) no planted identifier in stdout, stderr, the logs or any file under the out folder
    (parquet and SQLite decoded too), except values the case allows in the restricted
    unmapped.csv; no CSV cell that a spreadsheet would run as a formula;
(e) on success, the reconciliation holds per file and rows_read equals the physical data
    rows of each delivered file, counted here independently; planted rejects carry their
    physical line number.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CTDC_BIN = REPO_ROOT / ".venv" / "bin" / "ctdc"
RELEASE = "2025"
RECORDS = 60
SEED = 2025

# Delivered-file patterns per partner (as in mappings/<partner>/partner.yaml); the harness
# counts the physical rows of these files on its own.
FILES = {
    "iom": "iom_case_export_*.csv",
    "hotline": "hotline_reports_*.jsonl",
    "ctdc_legacy": "ctdc_global_*.csv",
    "case_management": "*.xlsx",
}
FORMAT = {"iom": "csv", "ctdc_legacy": "csv", "hotline": "jsonl", "case_management": "excel"}
IOM_FILE = "iom_case_export_2025.csv"
HOTLINE_FILE = "hotline_reports_2025.jsonl"
HTCDS_FILE = "htcds_case_export.xlsx"
LEGACY_2020 = "ctdc_global_2020_kanon.csv"
LEGACY_2021 = "ctdc_global_2021.csv"
HTCDS_DATA_START = 3  # row 1 field names, row 2 labels

# Invented identifiers: unique tokens that cannot occur by chance in any output.
NAME = "Zorbaxina Quillfeather"
PHONE = "+99 555 0199 7788"
EMAIL = "zorbaxina.quill@corpus-example.org"
DOB = "1957-11-23"
CASE_NO = "MIM-2031-ZQ0099"
FORMULA_LINK = '=HYPERLINK("http://evil-corpus.example/corpusformulaone","open")'
FORMULA_CMD = "-2+3+cmd|' /C calc corpusformulatwo'!A0"
FORMULA_AT = "@SUM(1+1)*cmd|' /C calc corpusformulathree'!A0"
FORMULA_MARKERS = {
    FORMULA_LINK: "corpusformulaone",
    FORMULA_CMD: "corpusformulatwo",
    FORMULA_AT: "corpusformulathree",
}


def name_series(n: int, prefix: str = "Zorbquill") -> list[str]:
    """n distinct invented surnames sharing a searchable prefix."""
    return [f"{prefix}{chr(97 + i % 26)}{i:03d}" for i in range(n)]


# --- physical rows, counted independently of the pipeline ------------------------------------


@dataclass(frozen=True)
class Record:
    first_line: int  # physical line (sheet row) where the record starts
    last_line: int
    cells: list


def csv_records(path: Path, delimiter: str = ",") -> list[Record]:
    """Data records of a CSV file with their physical line span; blank lines are not records."""
    text = path.read_bytes().decode("utf-8", errors="replace").lstrip("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    records, previous, header_seen = [], 0, False
    for cells in reader:
        start, previous = previous + 1, reader.line_num
        if not any(c.strip() for c in cells):
            continue
        if not header_seen:
            header_seen = True
            continue
        records.append(Record(start, reader.line_num, cells))
    return records


def jsonl_records(path: Path) -> list[Record]:
    text = path.read_bytes().decode("utf-8", errors="replace").lstrip("\ufeff")
    lines = text.replace("\r\n", "\n").split("\n")
    return [Record(i, i, [line]) for i, line in enumerate(lines, start=1) if line.strip()]


def excel_records(path: Path, start: int = HTCDS_DATA_START) -> list[Record]:
    from openpyxl import load_workbook

    book = load_workbook(path, read_only=True)
    # The data sheet as the reader chooses it without a configured name: the visible one.
    sheet = next(s for s in book.worksheets if s.sheet_state == "visible")
    records = []
    for number, row in enumerate(sheet.iter_rows(values_only=True), start=1):
        if number >= start and any(v not in (None, "") for v in row):
            records.append(Record(number, number, list(row)))
    book.close()
    return records


def physical_records(partner: str, path: Path) -> list[Record]:
    kind = FORMAT[partner]
    if kind == "csv":
        return csv_records(path)
    if kind == "jsonl":
        return jsonl_records(path)
    return excel_records(path)


def delivered_files(landing: Path, partner: str) -> list[Path]:
    folder = landing / partner
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file()
        and not p.is_symlink()
        and not p.name.startswith(("~$", "."))
        and p.match(FILES[partner])
    )


# --- editing the sample files -------------------------------------------------------------------


class CsvTable:
    """A CSV delivery as header + rows of text; written back with minimal quoting."""

    def __init__(self, path: Path):
        self.path = path
        with path.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.reader(handle))
        self.header, self.rows = rows[0], rows[1:]

    def col(self, name: str) -> int:
        return self.header.index(name)

    def get(self, row: int, name: str) -> str:
        return self.rows[row][self.col(name)]

    def set(self, row: int, name: str, value: str) -> None:
        self.rows[row][self.col(name)] = value

    def where(self, name: str, value: str) -> list[int]:
        j = self.col(name)
        return [i for i, r in enumerate(self.rows) if r[j] == value]

    def write(self, path: Path | None = None, delimiter: str = ",", newline: str = "\n") -> None:
        with (path or self.path).open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, delimiter=delimiter, lineterminator=newline)
            writer.writerow(self.header)
            writer.writerows(self.rows)


class JsonLines:
    def __init__(self, path: Path):
        self.path = path
        self.records = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]

    def lines(self) -> list[str]:
        return [json.dumps(r, ensure_ascii=False) for r in self.records]

    def write(self, lines: list[str] | None = None, newline: str = "\n") -> None:
        body = newline.join(self.lines() if lines is None else lines) + newline
        self.path.write_bytes(body.encode("utf-8"))


class Workbook:
    """The HTCDS sheet through openpyxl: cells addressed by field name and sheet row."""

    def __init__(self, path: Path):
        from openpyxl import load_workbook

        self.path = path
        self.book = load_workbook(path)
        self.sheet = self.book.worksheets[0]
        self.fields = [c.value for c in self.sheet[1]]

    def col(self, name: str) -> int:
        return self.fields.index(name) + 1

    @property
    def last_row(self) -> int:
        return self.sheet.max_row

    def get(self, row: int, name: str):
        return self.sheet.cell(row=row, column=self.col(name)).value

    def set(self, row: int, name: str, value) -> None:
        cell = self.sheet.cell(row=row, column=self.col(name))
        cell.value = value
        if isinstance(value, str) and value.startswith("="):
            cell.data_type = "s"  # a text cell that looks like a formula, not a formula

    def where(self, name: str, value) -> list[int]:
        j = self.col(name)
        return [r for r in range(HTCDS_DATA_START, self.last_row + 1) if self.cell(r, j) == value]

    def cell(self, row: int, column: int):
        return self.sheet.cell(row=row, column=column).value

    def save(self) -> None:
        self.book.save(self.path)


# --- mapping copies (run option --mappings) ----------------------------------------------------


def copy_mappings(target: Path, partners: Iterable[str]) -> Path:
    for partner in partners:
        shutil.copytree(REPO_ROOT / "mappings" / partner, target / partner)
    return target


def set_coverage_threshold(mappings: Path, partner: str, threshold: float) -> None:
    """Tolerate unknown coded values, so the run reaches the unmapped-values report."""
    path = mappings / partner / "partner.yaml"
    text = path.read_text(encoding="utf-8")
    text, count = re.subn(r"(?m)^(\s*threshold:\s*)[0-9.]+", rf"\g<1>{threshold}", text)
    assert count == 1, "partner.yaml format changed: adapt set_coverage_threshold"
    path.write_text(text, encoding="utf-8")


# --- HTCDS withdrawal by identifying fields: the ONE place that knows the format -------------
# Assumed design (engineer "config"): partner.yaml `withdrawals: {match_on: [...]}` and a
# landing/case_management/withdrawals.csv whose columns are those fields, one survivor a row.

HTCDS_MATCH_ON = ["prs_FirstName", "prs_SecondName", "prs_Birthdate"]


def enable_htcds_withdrawals(mappings: Path) -> None:
    path = mappings / "case_management" / "partner.yaml"
    text = path.read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    wanted = {"match_on": list(HTCDS_MATCH_ON)}
    if data.get("withdrawals") == wanted:
        return
    if "withdrawals" in data:
        data["withdrawals"] = wanted
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    else:
        path.write_text(
            text + f"\nwithdrawals:\n  match_on: [{', '.join(HTCDS_MATCH_ON)}]\n", encoding="utf-8"
        )


def write_htcds_withdrawals(
    folder: Path, people: list[tuple[str, str, str]], name: str = "withdrawals.csv"
) -> Path:
    """people: (first name, second name, birthdate as YYYY-MM-DD)."""
    path = folder / name
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(HTCDS_MATCH_ON)
        writer.writerows(people)
    return path


# --- a case and its environment ----------------------------------------------------------------


@dataclass
class Env:
    root: Path
    landing: Path
    out: Path
    partners: list[str] | None
    release: str = RELEASE
    mappings: Path | None = None
    warehouse: str | None = None
    tokens: list[str] = field(default_factory=list)  # never anywhere
    unmapped_ok: list[str] = field(default_factory=list)  # only in <release>/unmapped.csv
    rejected_at: list[tuple[str, set[int]]] = field(default_factory=list)
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def path(self, partner: str, name: str) -> Path:
        return self.landing / partner / name

    def plant(self, *values: str) -> str:
        self.tokens.extend(values)
        return values[0]

    def allow_in_unmapped(self, *values: str) -> None:
        self.unmapped_ok.extend(values)

    def expect_rejected(self, file: str, *lines: int) -> None:
        """The record at these physical line(s) must be listed in rejects.csv."""
        self.rejected_at.append((file, set(lines)))

    def own_mappings(self, *partners: str) -> Path:
        if self.mappings is None:
            self.mappings = copy_mappings(self.root / "mappings", partners or self.partners or [])
        return self.mappings

    def tolerate_unknown(self, partner: str) -> None:
        set_coverage_threshold(self.own_mappings(partner), partner, 1.0)


@dataclass(kw_only=True)
class Case:
    id: str
    partner: str
    mutate: Callable[[Env], None]
    exit: int | None  # None: the issue leaves the outcome open; invariants only
    names: list = field(default_factory=list)  # what a failure message must name
    check: Callable[[RunResult], None] | None = None
    promise: str = ""
    partners: list[str] | None = None  # default [partner]; [] = no --partners option

    def __post_init__(self):
        if self.partners is None:
            self.partners = [self.partner]


@dataclass
class RunResult:
    env: Env
    code: int | None
    stdout: str
    stderr: str
    logs: str
    escaped: str | None  # type of an exception that escaped main()

    @property
    def release_dir(self) -> Path:
        return self.env.out / self.env.release

    @property
    def text(self) -> str:
        return "\n".join([self.stdout, self.stderr, self.logs])


def line(n: int) -> re.Pattern:
    """A number as a whole number in a message (a line or row number)."""
    return re.compile(rf"(?<!\d){n}(?!\d)")


def any_of(*options) -> tuple:
    return tuple(options)


# --- running -----------------------------------------------------------------------------------


def argv_for(env: Env) -> list[str]:
    args = ["run", "--landing", str(env.landing), "--out", str(env.out), "--release", env.release]
    if env.partners:
        args += ["--partners", ",".join(env.partners)]
    if env.mappings is not None:
        args += ["--mappings", str(env.mappings)]
    if env.warehouse is not None:
        args += ["--warehouse", env.warehouse]
    return args


def run_in_process(env: Env, capsys, caplog) -> RunResult:
    from ctdc_harmonizer import cli

    caplog.set_level(logging.INFO)
    escaped = None
    code = None
    try:
        code = cli.main(argv_for(env))
    except SystemExit as exc:  # argparse usage errors
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:  # noqa: BLE001 - a traceback is the finding
        escaped = type(exc).__name__
    captured = capsys.readouterr()
    return RunResult(env, code, captured.out, captured.err, caplog.text, escaped)


def run_subprocess(
    env: Env, timeout: float = 300, user: int | None = None, extra_env: dict | None = None
) -> RunResult:
    command = [str(CTDC_BIN), *argv_for(env)]
    if user is not None:
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
    environment = {**os.environ, **(extra_env or {})}
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env=environment, check=False
    )
    return RunResult(env, done.returncode, done.stdout, done.stderr, "", None)


# --- checks ------------------------------------------------------------------------------------

TRACEBACK = "Traceback (most recent call last)"
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
NUMBER = re.compile(r"^[+-]?\d+(\.\d+)?([eE][+-]?\d+)?$")


def _variants(token: str) -> set[str]:
    base = unicodedata.normalize("NFC", token).casefold()
    found = {base, unicodedata.normalize("NFD", base)}
    marker = FORMULA_MARKERS.get(token)
    if marker:
        found = {marker}
    digits = re.sub(r"\D", "", token)
    if len(digits) >= 9 and len(digits) >= len(token) * 0.6:  # a phone number, reformatted
        found.add(digits)
    return found


def files_as_text(out: Path) -> Iterable[tuple[Path, bytes | str]]:
    """Every file under the out folder: its raw bytes, plus decoded parquet and SQLite text."""
    if not out.is_dir():
        return
    for folder, _, names in os.walk(out):
        for name in names:
            path = Path(folder) / name
            if path.is_symlink() or not path.is_file():
                continue
            data = path.read_bytes()
            yield path, data
            if name.endswith((".parquet", ".arrow")):  # compressed: decoded to be searched
                with contextlib.suppress(Exception):
                    import pyarrow as pa
                    import pyarrow.parquet as pq

                    if name.endswith(".parquet"):
                        table = pq.read_table(path)
                    else:  # the work folder's Arrow IPC frames (run/workdir.py)
                        table = pa.ipc.open_file(path).read_all()
                    yield path, repr(table.to_pylist())
            if data[:16] == b"SQLite format 3\x00":
                with contextlib.suppress(Exception):
                    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
                    yield path, "\n".join(connection.iterdump())
                    connection.close()


def find_leaks(result: RunResult) -> list[str]:
    env = result.env
    never = {v: t for t in env.tokens for v in _variants(t)}
    restricted = {v: t for t in env.unmapped_ok for v in _variants(t)}
    unmapped_report = (result.release_dir / "unmapped.csv").resolve()
    # The partner's receipt carries the same restricted unmapped list (release/receipts.py).
    receipts = (env.out / "receipts").resolve()
    leaks = []

    def restricted_place(path: Path) -> bool:
        path = path.resolve()
        if path == unmapped_report:
            return True
        return path.is_relative_to(receipts) and path.name in ("receipt.json", "receipt.html")

    def scan(where: str, content: bytes | str, allow_restricted: bool) -> None:
        if isinstance(content, bytes):  # raw file: compare lower-cased UTF-8 bytes
            folded, encode = content.lower(), (lambda v: v.encode("utf-8").lower())
        else:
            folded, encode = unicodedata.normalize("NFC", content).casefold(), (lambda v: v)
        for variant, token in never.items():
            if encode(variant) in folded:
                leaks.append(f"planted value #{env.tokens.index(token)} in {where}")
        if not allow_restricted:
            for variant, token in restricted.items():
                if encode(variant) in folded:
                    leaks.append(f"restricted value #{env.unmapped_ok.index(token)} in {where}")

    scan("stdout", result.stdout, False)
    scan("stderr", result.stderr, False)
    scan("logs", result.logs, False)
    for path, content in files_as_text(env.out):
        where = str(path.relative_to(env.out))
        scan(where, content, restricted_place(path))
    return sorted(set(leaks))


def formula_cells(out: Path) -> list[str]:
    """CSV cells under the out folder that a spreadsheet would evaluate as a formula."""
    found = []
    if not out.is_dir():
        return found
    for path in sorted(out.rglob("*.csv")):
        text = path.read_bytes().decode("utf-8", errors="replace").lstrip("\ufeff")
        for number, row in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
            for cell in row:
                if cell.startswith(FORMULA_START) and not NUMBER.match(cell):
                    found.append(f"{path.relative_to(out)} row {number}")
    return found


def _mentions(text: str, wanted) -> bool:
    options = wanted if isinstance(wanted, tuple) else (wanted,)
    for option in options:
        if isinstance(option, re.Pattern):
            if option.search(text):
                return True
        elif option.casefold() in text.casefold():
            return True
    return False


def _count(value) -> int:
    return sum(value.values()) if isinstance(value, dict) else int(value)


def check_reconciliation(result: RunResult, partners: list[str]) -> None:
    env = result.env
    recon = json.loads((result.release_dir / "reconciliation.json").read_text(encoding="utf-8"))
    for partner in partners:
        files = recon["partners"][partner]["files"]
        expected = {
            p.name: len(physical_records(partner, p)) for p in delivered_files(env.landing, partner)
        }
        assert sorted(files) == sorted(expected), f"{partner}: files {sorted(files)}"
        for name, entry in files.items():
            accounted = (
                entry["harmonized"]
                + _count(entry["rejected"])
                + _count(entry["excluded"])
                + entry["erased"]
                + entry["duplicates_merged"]
            )
            assert entry["rows_read"] == accounted, f"{partner}/{name}: counts do not add up"
            assert entry["rows_read"] == expected[name], (
                f"{partner}/{name}: rows_read {entry['rows_read']} != "
                f"{expected[name]} physical data rows"
            )


def rejected_rows(result: RunResult) -> list[dict]:
    with (result.release_dir / "rejects.csv").open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def check_rejects_located(result: RunResult, partners: list[str]) -> None:
    rows = rejected_rows(result)
    for file, lines in result.env.rejected_at:
        numbers = {int(r["row"]) for r in rows if r["file"] == file}
        assert numbers & lines, f"{file}: no reject at physical line(s) {sorted(lines)}"
    # Every reject names a line that holds a record (never a blank line or past the end).
    for partner in partners:
        for path in delivered_files(result.env.landing, partner):
            starts = {
                n
                for rec in physical_records(partner, path)
                for n in range(rec.first_line, rec.last_line + 1)
            }
            bad = [r["row"] for r in rows if r["file"] == path.name and int(r["row"]) not in starts]
            assert not bad, f"{path.name}: rejects at lines without a record: {bad[:5]}"


RELEASE_FILES = ["harmonized.csv", "harmonized.parquet", "reconciliation.json", "metadata.json"]


def release_is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in RELEASE_FILES)


def check_no_half_release(folder: Path) -> None:
    """A release folder that looks published (metadata.json) holds the whole release, and its
    files agree with each other."""
    if not (folder / "metadata.json").exists():
        return
    assert release_is_complete(folder), f"{folder.name} holds only {sorted(os.listdir(folder))}"
    meta = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))
    recon = json.loads((folder / "reconciliation.json").read_text(encoding="utf-8"))
    with (folder / "harmonized.csv").open(encoding="utf-8", newline="") as handle:
        rows = sum(1 for _ in csv.reader(handle)) - 1
    assert rows == meta["rows"] == recon["totals"]["harmonized"]


def check_promises(case: Case, result: RunResult) -> None:
    env = result.env
    problems = []
    if result.escaped:
        problems.append(f"exception escaped main(): {result.escaped}")
    if TRACEBACK in result.text:
        problems.append("a Python traceback was printed or logged")
    if case.exit is not None and result.code != case.exit:
        problems.append(f"exit code {result.code}, expected {case.exit}")
    if result.code not in (0, 1) and not result.escaped:
        problems.append(f"exit code {result.code} is neither 0 nor 1")
    if result.code == 1:
        if "ctdc: error:" not in result.stderr:
            problems.append("no 'ctdc: error:' line on stderr")
        for wanted in case.names:
            if not _mentions(result.stderr, wanted):
                label = wanted.pattern if isinstance(wanted, re.Pattern) else wanted
                problems.append(f"error message does not name {label!r}")
    problems += find_leaks(result)
    problems += [f"formula not escaped: {w}" for w in formula_cells(env.out)]
    check_no_half_release(result.release_dir)
    leaked = any("planted" in p or "restricted" in p for p in problems)
    # The run's own error line helps the reader, unless it is the thing that leaked.
    said = "" if leaked else " | stderr: " + result.stderr.strip()[-400:]
    assert not problems, "; ".join(problems) + said
    if result.code == 0:
        assert release_is_complete(result.release_dir), "release folder incomplete"
        check_reconciliation(result, env.partners or [case.partner])
        check_rejects_located(result, env.partners or [case.partner])
    if case.check:
        case.check(result)


def run_case(case: Case, env: Env, capsys, caplog) -> RunResult:
    try:
        case.mutate(env)
        result = run_in_process(env, capsys, caplog)
        check_promises(case, result)
        return result
    finally:
        for cleanup in env.cleanups:
            cleanup()


# The sample's HTCDS withdrawals.csv names two survivors by first name, second name and birth
# date; cases that rewrite those cells (every birth date, names shifted a column) would make
# it match nobody, and the withdrawal cases deliver a list of their own (withdrawn_people).
# So HTCDS cases start without it. The iom/hotline lists match on the record id (the few
# cases that rewrite one do so on rows the seeded list does not name) and several cases
# exercise them: they stay.
SAMPLE_WITHDRAWALS_DROPPED = {"case_management"}


def new_env(pristine: Path, root: Path, case: Case) -> Env:
    landing = root / "landing"
    landing.mkdir(parents=True)
    for partner in {case.partner, *(case.partners or [])}:
        if (pristine / partner).is_dir():
            shutil.copytree(pristine / partner, landing / partner)
            if partner in SAMPLE_WITHDRAWALS_DROPPED:
                (landing / partner / "withdrawals.csv").unlink(missing_ok=True)
    return Env(root=root, landing=landing, out=root / "out", partners=list(case.partners or []))


def case_ids(cases: list[Case]) -> list[str]:
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), "duplicate case id"
    return ids


def python() -> str:
    return sys.executable
