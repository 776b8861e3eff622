"""The commit's two ways into a SQLite store write the same store: the ADBC bulk path (ids of
new rows known without reading them back, the indexes of empty record tables built after the
load, new rows matched against withdrawals as they go in) and the SQLAlchemy path (ids read
back, indexes kept, whole tables scanned)."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa

from ctdc_harmonizer.pipeline.local import run_annual_update
from ctdc_harmonizer.store.commit import _holding, _Inserted
from ctdc_harmonizer.warehouse import connection, migrate
from ctdc_harmonizer.warehouse.connection import warehouse
from ctdc_harmonizer.warehouse.models import ReportingEntity, case_record_table
from support.harness import store_tables
from support.store_scenario import build


def test_releases_over_years_write_the_same_store_through_either_path(tmp_path, monkeypatch):
    """Three years (new, revised, retired and withdrawn records; a first release into empty
    tables, then commits onto a store that holds rows): the stores are equal after each."""
    scenario = build(tmp_path / "scenario")
    stores = {"adbc": tmp_path / "adbc", "core": tmp_path / "core"}
    for year in scenario.years:
        for path, out in stores.items():
            with monkeypatch.context() as patch:
                if path == "core":  # as where the ADBC driver is not installed
                    patch.setattr(connection, "_adbc_available", lambda: False)
                run_annual_update(
                    str(scenario.landing(year)),
                    str(out),
                    year,
                    mappings=str(scenario.mappings(year)),
                )
        adbc, core = (store_tables(out / "warehouse.sqlite") for out in stores.values())
        assert adbc.keys() == core.keys()
        for name in adbc:
            assert adbc[name] == core[name], (year, name)
        assert adbc["case_record"] and adbc["staged_record"] and adbc["partner_snapshot"]
    assert adbc["withdrawal_registry"] and adbc["privacy_audit"]  # erasures were made


@pytest.mark.parametrize("path", ["adbc", "core"])
def test_new_rows_are_matched_for_erasure_as_a_scan_of_the_table_matches_them(
    tmp_path, monkeypatch, path
):
    """`_holding` with the rows this commit inserted matched as they went in (read from the
    store only below the first new id) finds what a scan of the whole table finds: withdrawn
    people among earlier rows and among new ones."""
    if path == "core":
        monkeypatch.setattr(connection, "_adbc_available", lambda: False)
    url = f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
    migrate(url)
    case = case_record_table
    withdrawn = ["a" * 64, "c" * 64]

    def rows(entity: int, pseudonyms: list[str | None], first: int) -> pa.Table:
        n = len(pseudonyms)
        return pa.table(
            {
                "entity_id": pa.array([entity] * n, type=pa.int64()),
                "identity_key": [f"{i:064x}" for i in range(first, first + n)],
                "codebook_version": ["3"] * n,
                "yearOfRegistration": [2020] * n,
                "pseudonym": pa.array(pseudonyms, type=pa.string()),
                "valid_from": pa.array([1] * n, type=pa.int64()),
            }
        )

    with warehouse(url, "loading", write=True) as db:
        db.execute(
            sa.insert(ReportingEntity),
            [{"code": c, "name": c, "datasource_type": "x"} for c in ("p", "q")],
        )
        db.insert_arrow(case, rows(1, ["a" * 64, "b" * 64, None], 0))  # before the commit
        inserted = _Inserted.starting(db, pd.DataFrame({"pseudonym": [*withdrawn, None]}))
        for entity, pseudonyms, first in ((2, ["c" * 64, "b" * 64], 10), (1, ["a" * 64], 20)):
            data = rows(entity, pseudonyms, first)
            inserted.add(case, db.insert_arrow_ids(case, data), data, [1, None])
        extra = [case.c.valid_from, case.c.valid_to]
        matched = _holding(db, case, withdrawn, extra, inserted)
        scanned = _holding(db, case, withdrawn, extra)
    assert sorted(matched) == sorted(scanned) == [(1, 1, 1, None), (4, 2, 1, None), (6, 1, 1, None)]
    assert inserted.known == (path == "adbc")  # else the whole table was scanned


def test_a_snapshot_reads_back_as_the_records_and_as_the_former_encoding_did():
    """The snapshot's encoding (zstd, no dictionary for ids and keys) changes its bytes, not
    what it reads back as: the records, with the schema and pandas metadata that
    `DataFrame.to_parquet` gave (snapshots written so still read the same)."""
    import hashlib
    import io

    import pyarrow.parquet as pq

    from ctdc_harmonizer.codebook import default_codebook
    from ctdc_harmonizer.columns import CASE_ID, HELD_BACK, IDENTITY, PSEUDONYM
    from ctdc_harmonizer.store.records import snapshot_bytes, typed_records

    codebook = default_codebook()
    n = 300
    records = typed_records(
        pd.DataFrame(
            {
                CASE_ID: range(1, n + 1),
                IDENTITY: [f"{i:064x}" for i in range(n)],
                PSEUDONYM: [None if i % 7 else f"{i * 31:064x}" for i in range(n)],
                HELD_BACK: [i % 5 == 0 for i in range(n)],
                "yearOfRegistration": [2010 + i % 12 for i in range(n)],
                "gender": [("Male", "Female", None)[i % 3] for i in range(n)],
            },
            index=range(100, 100 + n),  # a filtered frame's index: not kept
        ),
        codebook,
    )
    data, sha256 = snapshot_bytes(records)
    former = io.BytesIO()
    records.reset_index(drop=True).to_parquet(former, index=False)
    assert sha256 == hashlib.sha256(data).hexdigest()
    read = pd.read_parquet(io.BytesIO(data))
    pd.testing.assert_frame_equal(read, records.reset_index(drop=True))
    pd.testing.assert_frame_equal(read, pd.read_parquet(io.BytesIO(former.getvalue())))
    written = pq.ParquetFile(io.BytesIO(data))
    assert written.schema_arrow.equals(pq.read_schema(former), check_metadata=True)
    columns = written.metadata.row_group(0)
    kinds = {
        columns.column(i).path_in_schema: columns.column(i) for i in range(columns.num_columns)
    }
    assert {c.compression for c in kinds.values()} == {"ZSTD"}
    assert not kinds[IDENTITY].has_dictionary_page and kinds["gender"].has_dictionary_page
