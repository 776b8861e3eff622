"""A change set's frames given as readers: read when the commit comes to them, let go of once
taken (store/commit.py)."""

from __future__ import annotations

import pandas as pd
import pytest

from ctdc_harmonizer.errors import CtdcError
from ctdc_harmonizer.store.commit import ChangeSet, _unchanged


def _reader(frame: pd.DataFrame, calls: list[str], name: str):
    def read() -> pd.DataFrame:
        calls.append(name)
        return frame

    return read


def _change_set(calls: list[str], delivery: dict | None, rows: int = 0) -> ChangeSet:
    empty = pd.DataFrame({"x": range(rows)})
    return ChangeSet(
        partner="iom",
        delivery=delivery,
        **{
            name: _reader(empty, calls, name)
            for name in ("staged_new", "case_new", "staged_end", "case_end", "current")
        },
    )


def test_a_reader_is_called_only_when_its_frame_is_asked_for_and_once():
    calls: list[str] = []
    changes = _change_set(calls, delivery={"mode": "full"}, rows=3)
    assert calls == []
    assert len(changes.frame("case_new")) == 3
    assert len(changes.frame("case_new")) == 3  # kept: not read again
    assert calls == ["case_new"]


def test_a_taken_frame_is_let_go_of_and_cannot_be_taken_again():
    calls: list[str] = []
    changes = _change_set(calls, delivery={"mode": "full"}, rows=2)
    assert len(changes.take("staged_new")) == 2
    assert changes.staged_new is None
    with pytest.raises(CtdcError, match="staged_new changes were already written"):
        changes.take("staged_new")
    assert calls == ["staged_new"]


def test_a_delivered_partner_is_judged_changed_without_reading_a_frame():
    calls: list[str] = []
    assert not _unchanged(_change_set(calls, delivery={"mode": "full"}))
    assert calls == []


def test_an_undelivered_partner_is_judged_by_its_frames_which_stay_for_the_commit():
    calls: list[str] = []
    changes = _change_set(calls, delivery=None)
    assert _unchanged(changes)
    assert sorted(calls) == ["case_end", "case_new", "staged_end", "staged_new"]
    assert changes.take("case_new").empty  # kept by the judgement, not read again
    assert sorted(calls) == ["case_end", "case_new", "staged_end", "staged_new"]
    assert not _unchanged(_change_set([], delivery=None, rows=1))


def test_frames_given_as_frames_work_as_before():
    frame = pd.DataFrame({"x": [1]})
    changes = ChangeSet("iom", None, frame, frame, frame, frame, frame)
    assert changes.take("current") is frame
