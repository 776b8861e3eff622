"""The floor of a run: the delivered files parsed by the fastest reader of each format, and a
27-column result of as many rows written as CSV and Parquet. Nothing else.

    python benchmarks/floor.py SPEC.json OUT_DIR

`bench_cli.py` writes SPEC.json (which files, each partner's reader settings, the codebook's
column names) and runs this script in a fresh child process, so that the interpreter's
start-up and the imports of pyarrow and fastexcel count, as they count for `ctdc run`:

- Excel workbook: fastexcel into Arrow, at the partner's sheet, header row and first data
  row, every cell read (as text by default: `"excel_dtypes": "string"`; `"infer"` infers each
  column's type from all rows);
- CSV: pyarrow.csv, every column as text, with the partner's delimiter and encoding, line
  breaks allowed inside quoted cells (the partners' CSV may carry them, so a reader that
  refuses them would not read the delivery);
- JSON lines: pyarrow.json, types inferred;
- the result: a table of 27 string columns (named as the codebook's) with one row per row
  read, made without copying from the parsed tables (from each, its 27 smallest text
  columns, padded with empty ones: a harmonized release holds short codes and many empty
  cells), written by pyarrow as CSV and as Parquet (snappy, pyarrow's default and the one
  pandas' to_parquet uses).

Prints one JSON object of counts, sizes and seconds on stdout; never a cell's value.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    formats = {f["format"] for f in spec["files"]}

    t0 = time.perf_counter()
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if "jsonl" in formats:
        import pyarrow.json  # noqa: F401
    if "excel" in formats:
        import fastexcel  # noqa: F401
    imports = time.perf_counter() - t0

    tables, files = [], []
    for entry in spec["files"]:
        t0 = time.perf_counter()
        table = READERS[entry["format"]](entry, spec)
        files.append(
            {
                "partner": entry["partner"],
                "format": entry["format"],
                "rows": table.num_rows,
                "columns": table.num_columns,
                "bytes": Path(entry["path"]).stat().st_size,
                "read_s": time.perf_counter() - t0,
            }
        )
        tables.append(table)

    t0 = time.perf_counter()
    result = result_table(tables, spec["columns"])
    build = time.perf_counter() - t0

    t0 = time.perf_counter()
    pacsv.write_csv(result, out / "harmonized.csv")
    write_csv = time.perf_counter() - t0
    t0 = time.perf_counter()
    pq.write_table(result, out / "harmonized.parquet")
    write_parquet = time.perf_counter() - t0

    print(
        json.dumps(
            {
                "pyarrow": pa.__version__,
                "threads": pa.cpu_count(),
                "import_s": imports,
                "files": files,
                "rows": result.num_rows,
                "result_columns": result.num_columns,
                "build_s": build,
                "write_csv_s": write_csv,
                "write_parquet_s": write_parquet,
                "csv_bytes": (out / "harmonized.csv").stat().st_size,
                "parquet_bytes": (out / "harmonized.parquet").stat().st_size,
                # From this script's first line: the interpreter's start-up is not in it.
                "script_s": time.perf_counter() - STARTED,
            }
        )
    )
    return 0


def read_excel(entry: dict, spec: dict):
    import fastexcel
    import pyarrow as pa

    sheet = fastexcel.read_excel(entry["path"]).load_sheet(
        entry["sheet"],
        header_row=entry["header_row"] - 1,  # fastexcel counts from 0
        skip_rows=entry["data_start_row"] - entry["header_row"] - 1,  # e.g. HTCDS' label row
        dtypes="string" if spec["excel_dtypes"] == "string" else None,
        schema_sample_rows=None,  # when inferring: from every row, so no cell is dropped
        eager=True,
    )
    return pa.Table.from_batches([sheet])


def read_csv(entry: dict, spec: dict):
    import pyarrow as pa
    import pyarrow.csv as pacsv

    read = pacsv.ReadOptions(encoding=entry["encoding"])
    parse = pacsv.ParseOptions(delimiter=entry["delimiter"], newlines_in_values=True)
    names = _csv_names(entry)  # the header line alone, to read every column as text
    convert = pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()))
    return pacsv.read_csv(
        entry["path"], read_options=read, parse_options=parse, convert_options=convert
    )


def _csv_names(entry: dict) -> list[str]:
    import csv

    encoding = entry["encoding"]
    if encoding.lower().replace("_", "-") in {"utf-8", "utf8"}:
        encoding = "utf-8-sig"
    with open(entry["path"], encoding=encoding, newline="") as handle:
        return next(csv.reader(handle, delimiter=entry["delimiter"]), [])


def read_jsonl(entry: dict, spec: dict):
    import pyarrow.json as pajson

    return pajson.read_json(entry["path"])


READERS = {"excel": read_excel, "csv": read_csv, "jsonl": read_jsonl}


def result_table(tables: list, names: list[str]):
    """27 text columns, one row per row read: each table's smallest text columns (by buffer
    size, no cell is looked at), padded with empty ones; the tables are chained, not copied
    (the write pays for the size)."""
    import pyarrow as pa

    parts = []
    for table in tables:
        text = [c for c in table.columns if pa.types.is_string(c.type)]
        text = sorted(text, key=lambda column: column.nbytes)[: len(names)]
        text += [pa.nulls(table.num_rows, pa.string())] * (len(names) - len(text))
        parts.append(pa.table(text, names=names))
    return pa.concat_tables(parts)


if __name__ == "__main__":
    sys.exit(main())
