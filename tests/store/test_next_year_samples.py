"""The next-year sample deliveries (samples/next_year.py), which the demo's second year and
the multi-year scenarios are made of: what their docstrings promise about each partner."""

from __future__ import annotations

import json
import random

from ctdc_harmonizer import samples
from ctdc_harmonizer.samples import next_year


def _iom_cases(folder):
    (extract,) = folder.glob(next_year.IOM_EXTRACT)
    return [row["case_id"] for row in next_year._read_csv(extract)[1]]


def test_withdrawals_are_read_as_csv(tmp_path):
    samples.generate("iom", tmp_path, 400, 3)
    ids = next_year.withdrawn_ids(tmp_path / "iom")
    assert ids and all('"' not in i for i in ids)
    assert set(ids) <= set(_iom_cases(tmp_path / "iom"))


def test_a_withdrawn_survivor_stays_in_every_re_extract(tmp_path):
    """IOM keeps a withdrawn survivor in its own system, so each re-extract holds them and the
    registry must erase them on reading (before, the withdrawal list was read with its CSV
    quotes and matched no case: the survivor stayed only by chance)."""
    samples.generate("iom", tmp_path, 400, 3)
    folder = tmp_path / "iom"
    withdrawn = next_year.withdrawn_ids(folder)
    rng = random.Random(1)
    for year in range(2026, 2046):
        before = set(_iom_cases(folder))
        rows = next_year.iom_re_extract(folder, folder, rng, str(year), new=5)
        after = [r["case_id"] for r in rows]
        assert after == _iom_cases(folder)  # what it returns is what it wrote
        assert set(withdrawn) <= set(after)
        assert len(set(after) - before) == 5 and all(
            c.endswith(f"-{year}") for c in set(after) - before
        )
        assert before - set(after)  # some cases gone every year (8% of 400)


def test_a_new_withdrawal_names_a_case_in_force_not_yet_withdrawn(tmp_path):
    samples.generate("iom", tmp_path, 400, 3)
    folder = tmp_path / "iom"
    earlier = next_year.withdrawn_ids(folder)
    chosen = next_year.iom_withdrawal(folder, random.Random(2))
    assert chosen in _iom_cases(folder) and chosen not in earlier
    assert next_year.withdrawn_ids(folder) == [*earlier, chosen]


def test_a_hotline_increment_revises_latest_reports_and_adds_new_ones(tmp_path):
    samples.generate("hotline", tmp_path, 300, 3)
    folder = tmp_path / "hotline"
    (first,) = folder.glob(next_year.HOTLINE_REPORTS)
    ids = {json.loads(line)["report_id"] for line in first.read_text().splitlines()}
    next_year.hotline_increment(folder, folder, random.Random(4), "2031", revised=4, new=5)
    lines = (folder / "hotline_reports_2031.jsonl").read_text().splitlines()
    increment = [json.loads(line)["report_id"] for line in lines]
    assert len(increment) == 9 and len(set(increment)) == 9
    assert len(set(increment) & ids) == 4  # revised under their report id
    assert all(i.startswith("HL-31-") for i in set(increment) - ids)
    assert sorted(p.name for p in folder.glob(next_year.HOTLINE_REPORTS))[-1].endswith("2031.jsonl")


def test_the_mapping_correction_is_made_and_undone(tmp_path):
    from support.store_scenario import REPO_MAPPINGS

    mappings = next_year.copy_mappings(REPO_MAPPINGS, tmp_path / "m")
    values = mappings / "case_management" / "values.csv"
    original = values.read_text()
    next_year.correct_mapping(mappings)
    assert values.read_text() != original and next_year.CORRECTION[1] in values.read_text()
    next_year.correct_mapping(mappings, undo=True)
    assert values.read_text() == original


def test_a_partner_marked_discontinued_loads_as_discontinued(tmp_path):
    from ctdc_harmonizer.mapping.partner import load_partner
    from support.store_scenario import REPO_MAPPINGS

    mappings = next_year.copy_mappings(REPO_MAPPINGS, tmp_path / "m")
    assert load_partner(mappings / "hotline").delivery.status == "active"
    next_year.mark_discontinued(mappings, "hotline")
    assert load_partner(mappings / "hotline").delivery.status == "discontinued"
