"""The explorer page's data, without a browser (tests/synthesis/test_explorer_browser.py
opens it)."""

from __future__ import annotations

import base64
import json

import numpy as np
import pandas as pd
import pytest

from ctdc_harmonizer.codebook import default_codebook
from ctdc_harmonizer.synthesis import explorer
from ctdc_harmonizer.synthesis.evaluate import combination_counts
from ctdc_harmonizer.synthesis.public_release import RECORD_COUNT_ROW

CODEBOOK = default_codebook()


def _public(rows: int = 300, seed: int = 3) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    rng = np.random.default_rng(seed)
    data = {}
    for var in CODEBOOK.variables:
        if var.type == "year":
            data[var.name] = rng.integers(2015, 2020, rows).astype(str)
        elif var.type == "binary":
            data[var.name] = np.where(rng.random(rows) < 0.3, "1", "")
        else:
            allowed = ["UKR", "PHL", "</script>"] if var.type == "country" else var.allowed
            data[var.name] = np.where(rng.random(rows) < 0.2, "", rng.choice(allowed, rows))
    synthetic = pd.DataFrame(data)[CODEBOOK.columns]
    counts = combination_counts(synthetic, 2, CODEBOOK)
    counts["gender:Transgender/NonConforming"] = 7  # released, held by no synthetic record
    aggregates = pd.DataFrame(
        {
            "combination": [RECORD_COUNT_ROW, *counts.index],
            "length": [0, *(counts.index.str.count(";") + 1)],
            "count": [rows + 3, *counts.to_numpy()],
        }
    )
    meta = {"version": {"release": "t-2025"}, "method": {"epsilon": 12.0, "delta": 3.9e-7}}
    meta["method"]["reporting_length"] = 2
    return aggregates, synthetic, meta


def test_compact_keys_and_codes_hold_exactly_the_public_files():
    aggregates, synthetic, meta = _public()
    data = explorer.payload(aggregates, synthetic, meta, CODEBOOK)
    columns = data["columns"]
    assert data["protected_records"] == len(synthetic) + 3
    decoded = {}
    for column, encoded in zip(columns, data["codes"], strict=True):
        codes = np.frombuffer(base64.b64decode(encoded), dtype=np.uint8)
        decoded[column["name"]] = [column["values"][c] for c in codes]
    assert pd.DataFrame(decoded).equals(synthetic)
    expected = {}
    for combination, count in zip(
        aggregates["combination"][1:], aggregates["count"][1:], strict=True
    ):
        parts = []
        for part in combination.split(";"):
            name, value = part.split(":", 1)
            index = CODEBOOK.columns.index(name)
            parts.append(f"{index}.{columns[index]['values'].index(value)}")
        expected[";".join(parts)] = int(count)
    assert data["aggregates"] == expected
    assert "Transgender/NonConforming" in columns[CODEBOOK.columns.index("gender")]["values"]


def test_the_page_embeds_its_data_safely_and_nothing_external():
    aggregates, synthetic, meta = _public()
    page = explorer.render(aggregates, synthetic, meta, CODEBOOK)
    assert page.count("</script>") == 2  # a value "</script>" cannot close the data element
    start = page.index('id="data">') + len('id="data">')
    data = json.loads(page[start : page.index("</script>", start)])
    assert data["epsilon"] == 12.0 and data["delta"] == 3.9e-7
    assert "<script src" not in page and "http://" not in page and "https://" not in page


@pytest.mark.parametrize(
    ("dp", "synthetic", "expected"),
    [(795, 524, 65.9), (10, 10, 100.0), (0, 0, 100.0), (None, 3, None)],
)
def test_comparability_is_the_smaller_over_the_larger(dp, synthetic, expected):
    assert explorer.comparability(dp, synthetic) == expected
