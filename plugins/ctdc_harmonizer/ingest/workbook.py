"""What a workbook shows a person that a cell reader does not say, read from the file itself.

fastexcel (calamine) gives every cell's value fast, but not: whether a formula cell has a
stored result (calamine reads a formula without one as an empty cell), whether a cell holds
an error value (#N/A reads as empty), which cells a merged range covers (only its top-left
cell holds the value), which sheets are hidden. For .xlsx this module streams the archive's
XML once, in blocks, with byte searches at C speed; the per-cell regular expressions run
only on blocks that hold a formula or an error cell. Nothing here keeps a cell's value: only
positions and reason codes leave it.

Before anything is decompressed the archive's directory is checked against the declared
limits (schemas/reader_limits_v1.yaml), and an encrypted workbook is named as such.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath

from ctdc_harmonizer.errors import ExtractError
from ctdc_harmonizer.fileio import load_yaml
from ctdc_harmonizer.paths import schemas_dir

LIMITS_FILE = "reader_limits_v1.yaml"

# Reason codes of a cell the reader cannot read exactly (rejects.csv, the reader's messages).
FORMULA_WITHOUT_RESULT = "formula_without_result"
ERROR_CELL = "error_cell"
AMBIGUOUS_MERGE = "ambiguous_merged_cell"
CELL_REASONS = [FORMULA_WITHOUT_RESULT, ERROR_CELL, AMBIGUOUS_MERGE]
CELL_PROBLEMS = {
    FORMULA_WITHOUT_RESULT: (
        "formula without a stored result: open and save the file in Excel or LibreOffice"
    ),
    ERROR_CELL: "the cell holds an error value (#N/A, #REF!, #DIV/0! ...), not a value",
    AMBIGUOUS_MERGE: (
        "the cell lies in a merged range spanning several columns or the header rows: "
        "which value it holds is a guess; unmerge the cells"
    ),
}

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # compound file: .xls, or an encrypted .xlsx
# Stream names of an encrypted OOXML package, as the compound file's directory spells them.
ENCRYPTED_STREAMS = ("EncryptionInfo".encode("utf-16-le"), "EncryptedPackage".encode("utf-16-le"))
ENCRYPTED = "encrypted workbook: save it without a password"
LEGACY_XLS = (
    "a legacy Excel 97-2003 workbook (.xls): its formulas and merged cells cannot be "
    "checked; save it as .xlsx or .ods"
)
MANIFEST = "META-INF/manifest.xml"  # an OpenDocument file's list of members

_BLOCK = 4 << 20  # bytes of sheet XML decompressed at a time
_ROW = re.compile(rb"<(?:\w+:)?row\b([^>]*)>")
_ROW_OR_CELL = re.compile(
    rb"<(?:\w+:)?row\b([^>]*)>|<(?:\w+:)?c\b([^>]*?)(?:/>|>(.*?)</(?:\w+:)?c>)", re.S
)
_REF = re.compile(rb'\br="([A-Z]{1,3})?(\d+)"')
_TYPE = re.compile(rb'\bt="(\w+)"')
_FORMULA = re.compile(rb"<(?:\w+:)?f[\s>/]")
_VALUE = re.compile(rb"<(?:\w+:)?v\s*(/>|>(.*?)</(?:\w+:)?v>)", re.S)
_INLINE = re.compile(rb"<(?:\w+:)?is[\s>]")
_MERGE = re.compile(rb'<(?:\w+:)?mergeCell\b[^>]*?\bref="([A-Z]{1,3})(\d+)(?::([A-Z]{1,3})(\d+))?"')
_NS_REL = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}id"


@dataclass(frozen=True)
class ReaderLimits:
    max_unpacked_bytes: int
    max_compression_ratio: float
    max_unreadable_cells: int


@lru_cache(maxsize=4)
def _limits_from(path: Path) -> ReaderLimits:
    data = load_yaml(path.read_text(encoding="utf-8"))["workbook"]
    return ReaderLimits(
        max_unpacked_bytes=int(data["max_unpacked_mb"]) << 20,
        max_compression_ratio=float(data["max_compression_ratio"]),
        max_unreadable_cells=int(data["max_unreadable_cells"]),
    )


def reader_limits() -> ReaderLimits:
    """The declared limits (schemas/reader_limits_v1.yaml)."""
    return _limits_from(schemas_dir() / LIMITS_FILE)


def column_letters(index: int) -> str:
    """1 -> A, 28 -> AB."""
    letters = ""
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def column_index(letters: bytes | str) -> int:
    """A -> 1, AB -> 28."""
    index = 0
    for char in letters.decode() if isinstance(letters, bytes) else letters:
        index = index * 26 + ord(char) - 64
    return index


@dataclass(frozen=True)
class Merge:
    first_row: int
    first_column: int
    last_row: int
    last_column: int


@dataclass
class SheetScan:
    """Positions (1-based sheet row and column) of what the value reader cannot see."""

    first_row: int | None = None  # the first row holding a value (where calamine starts)
    problems: dict[tuple[int, int], str] = field(default_factory=dict)  # cell -> reason
    merges: list[Merge] = field(default_factory=list)


def check_workbook_file(partner: str, path: Path, limits: ReaderLimits) -> None:
    """Refuse, before decompressing anything, an encrypted workbook and an archive beyond the
    declared limits (sizes from the zip's central directory)."""
    with path.open("rb") as handle:
        head = handle.read(len(OLE_MAGIC))
        if head == OLE_MAGIC:
            if _names_an_encrypted_package(handle):
                raise ExtractError(partner, path.name, ENCRYPTED)
            # A legacy .xls (BIFF): calamine reads its values, but nothing here can tell a
            # formula without result or a merged consent block in it: refused, not guessed.
            raise ExtractError(partner, path.name, LEGACY_XLS)
    if not zipfile.is_zipfile(path):
        return  # calamine says what it is not
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
        manifest = archive.getinfo(MANIFEST) if _has(archive, MANIFEST) else None
        # A password-protected .ods encrypts its members and says so in its manifest.
        small = manifest is not None and manifest.file_size < 1 << 20
        if small and b"encryption-data" in archive.read(MANIFEST):
            raise ExtractError(partner, path.name, ENCRYPTED)
    unpacked = sum(m.file_size for m in members)
    packed = max(sum(m.compress_size for m in members), 1)
    if unpacked > limits.max_unpacked_bytes:
        raise ExtractError(
            partner,
            path.name,
            f"workbook too large once decompressed ({unpacked >> 20} MB, the limit is "
            f"{limits.max_unpacked_bytes >> 20} MB, schemas/{LIMITS_FILE}): split the "
            "extract into several files",
        )
    if unpacked / packed > limits.max_compression_ratio:
        raise ExtractError(
            partner,
            path.name,
            f"workbook compressed {unpacked // packed} times (the limit is "
            f"{limits.max_compression_ratio:g}, schemas/{LIMITS_FILE}): not a workbook as "
            "spreadsheet programs write them",
        )


def _has(archive: zipfile.ZipFile, name: str) -> bool:
    try:
        archive.getinfo(name)
    except KeyError:
        return False
    return True


def _names_an_encrypted_package(handle) -> bool:
    """Whether a compound file holds the streams of an encrypted OOXML package. The
    directory's names are UTF-16; a block-wise search bounds memory."""
    tail = b""
    while block := handle.read(1 << 20):
        data = tail + block
        if any(name in data for name in ENCRYPTED_STREAMS):
            return True
        tail = data[-64:]
    return False


@dataclass(frozen=True)
class SheetEntry:
    name: str
    visible: bool
    part: str  # the sheet's XML member in the archive


def xlsx_sheets(archive: zipfile.ZipFile) -> list[SheetEntry]:
    """The workbook's sheets in order, with their state and XML part (workbook.xml and its
    relationships: small files, parsed whole)."""
    book = ET.fromstring(archive.read("xl/workbook.xml"))
    rels = ET.fromstring(archive.read("xl/_rels/workbook.xml.rels"))
    targets = {r.get("Id"): r.get("Target", "") for r in rels}
    entries = []
    for sheet in book.iter():
        if not sheet.tag.endswith("}sheet"):
            continue
        target = targets.get(sheet.get(_NS_REL), "")
        part = target.lstrip("/") if target.startswith("/") else f"xl/{target}"
        entries.append(
            SheetEntry(
                name=sheet.get("name", ""),
                visible=sheet.get("state", "visible") == "visible",
                part=str(PurePosixPath(part)),
            )
        )
    return entries


def choose_sheet(
    partner: str, file: str, sheets: list[tuple[str, bool]], wanted: str | None
) -> str:
    """The data sheet: the configured name, else the one visible sheet. Hidden sheets are
    never chosen by position (last year's export hidden in front of this year's)."""
    if wanted is not None:
        if wanted not in [name for name, _ in sheets]:
            raise ExtractError(
                partner,
                file,
                f"the workbook has no sheet named as reader.sheet in partner.yaml "
                f"({len(sheets)} sheet(s))",
            )
        return wanted
    visible = [name for name, shown in sheets if shown]
    if len(visible) != 1:
        raise ExtractError(
            partner,
            file,
            f"{len(visible)} visible sheets and no reader.sheet in partner.yaml: which one "
            "holds the data is a guess; name it there, or deliver one visible sheet",
        )
    return visible[0]


def scan_sheet(
    partner: str, file: str, archive: zipfile.ZipFile, part: str, columns: set[int] | None
) -> SheetScan:
    """Stream one sheet's XML: the first row holding a value, the cells of `columns` (all
    when None) that cannot be read exactly, and the merged ranges."""
    scan = SheetScan()
    state = {"row": 0, "column": 0, "partner": partner, "file": file}
    tail = b""
    with archive.open(part) as stream:
        while True:
            block = stream.read(_BLOCK)
            data = tail + block
            if not block:
                _scan_cells(data, scan, state, columns)
                break
            # Cut before the last row start: a row is never split between two passes.
            cut = _last_row_start(data)
            if cut <= 0:
                tail = data
                continue
            _scan_cells(data[:cut], scan, state, columns)
            tail = data[cut:]
    return scan


def _last_row_start(data: bytes) -> int:
    at = data.rfind(b"row", 0, len(data))
    while at > 0:
        start = data.rfind(b"<", 0, at)
        if (
            start >= 0
            and re.fullmatch(rb"<(?:\w+:)?", data[start:at])
            and data[at + 3 : at + 4]
            in (
                b" ",
                b">",
                b"/",
                b"\t",
                b"\n",
                b"\r",
            )
        ):
            return start
        at = data.rfind(b"row", 0, at)
    return -1


def _scan_cells(data: bytes, scan: SheetScan, state: dict, columns: set[int] | None) -> None:
    if scan.first_row is None:  # cell by cell only up to the first row holding a value
        data = data[_cell_by_cell(data, scan, state, columns, until_first_row=True) :]
    if _has_markers(data):
        _cell_by_cell(data, scan, state, columns)
    else:  # nothing to see cell by cell: only where the rows got to
        last = _ROW.match(data, max(_last_row_start(data), 0))
        ref = _REF.search(last.group(1)) if last else None
        if ref:  # rows say their number (every writer we know does)
            state["row"] = int(ref.group(2))
        else:
            state["row"] += sum(1 for _ in _ROW.finditer(data))
    _scan_merges(data, scan)


def _has_markers(data: bytes) -> bool:
    """Whether `data` may hold a formula (`<f`, or `<x:f` with a namespace prefix) or an error
    value (`<v>#N/A</v>`: every error value starts with '#'). Vectorised: the positions of
    the rare byte ('f', '#') first, then the byte before each; a false alarm (a text holding
    '<f' or '>#') only sends the block through the exact, slower path."""
    import numpy as np

    octets = np.frombuffer(data, dtype=np.uint8)
    for rare, before in ((b"f"[0], (b"<"[0], b":"[0])), (b"#"[0], (b">"[0],))):
        at = np.flatnonzero(octets[1:] == rare)
        if at.size and np.isin(octets[at], before).any():
            return True
    return False


def _cell_by_cell(
    data: bytes,
    scan: SheetScan,
    state: dict,
    columns: set[int] | None,
    until_first_row: bool = False,
) -> int:
    """The slow path over rows and cells; returns where it stopped (with `until_first_row`:
    the start of the row after the first one holding a value)."""
    for match in _ROW_OR_CELL.finditer(data):
        attributes = match.group(1)
        if attributes is not None:  # a row
            if until_first_row and scan.first_row is not None:
                return match.start()
            ref = _REF.search(attributes)
            state["row"] = int(ref.group(2)) if ref else state["row"] + 1
            state["column"] = 0
            continue
        attributes, content = match.group(2), match.group(3) or b""
        ref = _REF.search(attributes)
        column = column_index(ref.group(1)) if ref and ref.group(1) else state["column"] + 1
        state["column"] = column
        kind = _TYPE.search(attributes)
        kind = kind.group(1) if kind else b"n"
        value = _VALUE.search(content)
        has_value = bool(value and value.group(2)) or kind == b"e" or bool(_INLINE.search(content))
        if has_value and scan.first_row is None:
            scan.first_row = state["row"]
        if columns is not None and column not in columns:
            continue
        reason = None
        if kind == b"e":
            reason = ERROR_CELL
        elif _FORMULA.search(content) and (
            value is None or (not has_value and kind not in (b"str", b"inlineStr"))
        ):
            # No <v> at all, or an empty one where only a text result may be empty.
            reason = FORMULA_WITHOUT_RESULT
        if reason:
            scan.problems[(state["row"], column)] = reason
            if len(scan.problems) > reader_limits().max_unreadable_cells:
                raise ExtractError(
                    state["partner"],
                    state["file"],
                    f"more than {reader_limits().max_unreadable_cells} cells cannot be read "
                    f"exactly (first: {_first_problem(scan)}): open and save the file in "
                    "Excel or LibreOffice",
                )
    return len(data)


def _first_problem(scan: SheetScan) -> str:
    (row, column), reason = min(scan.problems.items())
    return f"cell {column_letters(column)}{row}, {reason}"


def _scan_merges(data: bytes, scan: SheetScan) -> None:
    if b"mergeCell" not in data:
        return
    for match in _MERGE.finditer(data):
        first_column, first_row = column_index(match.group(1)), int(match.group(2))
        last_column = column_index(match.group(3)) if match.group(3) else first_column
        last_row = int(match.group(4)) if match.group(4) else first_row
        scan.merges.append(Merge(first_row, first_column, last_row, last_column))


# --- OpenDocument (.ods) ----------------------------------------------------------------------

_T = "{urn:oasis:names:tc:opendocument:xmlns:table:1.0}"
_O = "{urn:oasis:names:tc:opendocument:xmlns:office:1.0}"
_CALC = "{urn:org:documentfoundation:names:experimental:calc:xmlns:calcext:1.0}"


def is_ods(archive: zipfile.ZipFile) -> bool:
    return "content.xml" in archive.namelist() and "xl/workbook.xml" not in archive.namelist()


def scan_ods_sheet(partner: str, file: str, archive: zipfile.ZipFile, sheet: str) -> SheetScan:
    """The same facts from an OpenDocument spreadsheet's content.xml, for the named table:
    a formula without `office:value-type` has no stored result; `calcext:value-type="error"`
    is an error value; `number-rows-spanned` / `number-columns-spanned` are merges. Repeated
    rows and cells (LibreOffice writes a sheet's empty tail as one row repeated a million
    times) advance the position without a loop."""
    scan = SheetScan()
    limit = reader_limits().max_unreadable_cells
    row = column = 0
    inside = False
    with archive.open("content.xml") as stream:
        for event, element in ET.iterparse(stream, events=("start", "end")):
            tag = element.tag
            if tag == f"{_T}table":
                if event == "start":
                    inside = element.get(f"{_T}name") == sheet
                elif inside:
                    break
                element.clear()
                continue
            if not inside:
                if event == "end":
                    element.clear()
                continue
            if tag == f"{_T}table-row":
                if event == "start":
                    row, column = row + 1, 0
                else:
                    row += int(element.get(f"{_T}number-rows-repeated", "1")) - 1
                    element.clear()
                continue
            if event != "end" or tag not in (f"{_T}table-cell", f"{_T}covered-table-cell"):
                continue
            repeat = int(element.get(f"{_T}number-columns-repeated", "1"))
            column += 1
            kind = element.get(f"{_O}value-type")
            shown = kind is not None or any((t or "").strip() for t in element.itertext())
            if shown and scan.first_row is None:
                scan.first_row = row
            reason = None
            if element.get(f"{_CALC}value-type") == "error":
                reason = ERROR_CELL
            elif element.get(f"{_T}formula") is not None and kind is None:
                reason = FORMULA_WITHOUT_RESULT
            if reason:
                for offset in range(min(repeat, limit + 1)):  # repeated cells, bounded
                    scan.problems[(row, column + offset)] = reason
                if len(scan.problems) > limit:
                    raise ExtractError(
                        partner,
                        file,
                        f"more than {limit} cells cannot be read exactly (first: "
                        f"{_first_problem(scan)}): open and save the file in Excel or "
                        "LibreOffice",
                    )
            rows_spanned = int(element.get(f"{_T}number-rows-spanned", "1"))
            columns_spanned = int(element.get(f"{_T}number-columns-spanned", "1"))
            if rows_spanned > 1 or columns_spanned > 1:
                scan.merges.append(
                    Merge(row, column, row + rows_spanned - 1, column + columns_spanned - 1)
                )
            column += repeat - 1
            element.clear()
    return scan
