"""The work folder's frames: `.arrow` (Arrow IPC) reads back exactly as `.parquet` does.

The annual update's intermediates moved from Parquet to Arrow IPC for speed; a step must not
see a different frame because of it (dtypes, missing values, categories, index).
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

from ctdc_harmonizer.run import workdir
from ctdc_harmonizer.run.workdir import PartnerWork, WorkDir


def mixed_frame() -> pd.DataFrame:
    """The kinds of columns the chain writes, with a non-default index to drop."""
    frame = pd.DataFrame(
        {
            "text": pd.array(["a", None, "ç:;"], dtype="string"),
            "plain": ["x", None, "y"],
            "code": pd.Categorical(["F", "M", None], categories=["F", "M", "U"]),
            "year": pd.array([2019, None, 2025], dtype="Int64"),
            "key": np.array([1, 2**63 - 1, 0], dtype=np.int64),
            "flag": [True, False, True],
            "share": [0.5, np.nan, 1.0],
            "nothing": [None, None, None],
        },
        index=[7, 3, 5],
    )
    return frame


def test_every_annual_update_frame_is_arrow_and_synthesis_keeps_parquet():
    names = [
        value
        for cls in (PartnerWork, WorkDir)
        for attribute, value in vars(cls).items()
        if attribute.isupper() and isinstance(value, str) and not value.endswith((".json", ".csv"))
    ]
    assert len(names) >= 15
    assert all(name.endswith(workdir.ARROW_SUFFIX) for name in names), names
    assert workdir.SynthesisWork.SENSITIVE.endswith(".parquet")


@pytest.mark.parametrize("columns", [None, ["code", "year"]])
def test_an_arrow_frame_reads_back_as_its_parquet_twin(tmp_path, columns):
    work = WorkDir(tmp_path / "work").create().partner("p")
    frame = mixed_frame()
    work.write_frame("f.arrow", frame)
    work.write_frame("f.parquet", frame)
    from_arrow = work.read_frame("f.arrow", columns=columns)
    from_parquet = work.read_frame("f.parquet", columns=columns)
    pdt.assert_frame_equal(from_arrow, from_parquet)
    expected = frame.reset_index(drop=True)
    pdt.assert_frame_equal(
        from_arrow, expected if columns is None else expected[columns], check_dtype=False
    )
    assert list(from_arrow["code"].cat.categories) == ["F", "M", "U"]  # unused one kept
    assert (work.root / "f.arrow").read_bytes()[:6] == b"ARROW1"  # an Arrow IPC file


def test_a_column_kept_from_an_arrow_frame_keeps_only_itself(tmp_path):
    """Read uncompressed, every column would share one buffer the size of the file; a step
    keeping one column (the commit keeps identity keys per partner) would keep it all."""
    import gc

    import pyarrow as pa

    work = WorkDir(tmp_path / "work").create().partner("p")
    frame = pd.DataFrame({"key": np.arange(200_000), "text": ["x" * 200] * 200_000})
    work.write_frame("f.arrow", frame)
    del frame
    gc.collect()
    before = pa.total_allocated_bytes()
    read = work.read_frame("f.arrow")
    assert pa.total_allocated_bytes() - before > 40_000_000  # the text, in Arrow's pool
    kept = read[["key"]]
    del read
    gc.collect()
    assert pa.total_allocated_bytes() - before < 4_000_000  # the key column only
    assert len(kept) == 200_000


def test_the_bytes_sent_to_an_object_store_are_compressed_ipc():
    frame = pd.DataFrame({"text": ["the same words again"] * 5000})
    data = workdir._ipc_bytes(frame)
    assert data[:6] == b"ARROW1"
    assert len(data) < 20_000  # zstd: 100 kB of repeated text shrinks
    pdt.assert_frame_equal(pd.read_feather(io.BytesIO(data)), frame)


def test_the_leak_search_reads_inside_a_compressed_frame(tmp_path):
    """The hostile corpora search every file under the out folder for planted values; a work
    frame left behind is compressed (lz4 may keep a first occurrence as it is, zstd does not),
    so the search decodes it rather than count on the codec."""
    from support.corpus import files_as_text

    planted = "Zarqa Plantedname"
    work = WorkDir(tmp_path / "out" / ".work" / "2025").create().partner("p")
    work.write_frame(PartnerWork.STAGED, pd.DataFrame({"name": [planted] * 2000}))
    decoded = [text for _, text in files_as_text(tmp_path / "out") if isinstance(text, str)]
    assert len(decoded) == 1 and decoded[0].count(planted) == 2000
