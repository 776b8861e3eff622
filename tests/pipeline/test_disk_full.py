"""A full disk (ENOSPC) in every step names the path and the errno; during the warehouse load
it says "disk full", not "busy or unreachable"; the release folder stays whole (issue 15)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from test_run_safety import (
    RELEASE,
    argv,
    assert_clean,
    assert_no_run_left,
    good_rows,
    setup,
)

from ctdc_harmonizer import cli
from ctdc_harmonizer.warehouse import connection
from support.tiny_partner import row, write_extract

# What pyarrow raises on a full disk: no errno attribute, no file name, the number in its text.
PYARROW_FULL = "[Errno 28] Error writing bytes to file. Detail: [errno 28] No space left on device"


def _full_when(method: str, fragment: str, monkeypatch) -> None:
    """pandas' writer `method` fails like pyarrow on a full disk for a path holding fragment."""
    real = getattr(pd.DataFrame, method)

    def write(self, path=None, *args, **kwargs):
        if path is not None and fragment in str(path):
            raise OSError(PYARROW_FULL)
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, method, write)


@pytest.mark.parametrize(
    ("method", "fragment"),
    [
        ("to_parquet", "/.work/"),  # a work file of a step
        ("to_parquet", "harmonized.parquet"),  # the release folder built aside
        ("to_csv", "rejects.csv"),  # a report of the release folder
    ],
)
def test_full_disk_names_the_path_and_errno(tmp_path, capsys, monkeypatch, method, fragment):
    setup(tmp_path, good_rows())
    _full_when(method, fragment, monkeypatch)
    assert cli.main(argv(tmp_path)) == 1
    captured = capsys.readouterr()
    assert "ENOSPC (No space left on device)" in captured.err
    assert f"cannot use '{tmp_path / 'out'}" in captured.err and fragment in captured.err
    assert_clean(tmp_path, captured)
    assert_no_run_left(tmp_path)
    assert not (tmp_path / "out" / RELEASE).exists()  # no half release
    monkeypatch.undo()
    assert cli.main(argv(tmp_path)) == 0


def test_full_warehouse_disk_says_disk_full_and_keeps_releases_whole(tmp_path, capsys, monkeypatch):
    setup(tmp_path, good_rows())
    assert cli.main(argv(tmp_path)) == 0
    first = (tmp_path / "out" / RELEASE / "harmonized.csv").read_bytes()
    write_extract(tmp_path, [row(case_id=f"N{i}", gender="M") for i in range(30)], "new.csv")
    capsys.readouterr()
    # SQLite's own "database or disk is full" (SQLITE_FULL), raised by the real driver: the
    # file may not grow by a page.
    real = connection._SqliteArrow.__init__

    def capped(self, database, *args, **kwargs):
        real(self, database, *args, **kwargs)
        self._cursor.execute("PRAGMA page_count")
        pages = self._cursor.fetchone()[0]
        self._cursor.execute(f"PRAGMA max_page_count={pages}")

    monkeypatch.setattr(connection._SqliteArrow, "__init__", capped)
    assert cli.main(argv(tmp_path, release="2026")) == 1
    captured = capsys.readouterr()
    assert "disk full" in captured.err
    assert "busy" not in captured.err and "unreachable" not in captured.err
    assert_clean(tmp_path, captured)
    assert not (tmp_path / "out" / "2026").exists()
    assert (tmp_path / "out" / RELEASE / "harmonized.csv").read_bytes() == first
    meta = json.loads((tmp_path / "out" / RELEASE / "metadata.json").read_text())
    assert meta["release"] == RELEASE
    monkeypatch.undo()
    assert cli.main(argv(tmp_path, release="2026")) == 0
