"""The public explorer: one self-contained HTML page over the public release (issue 19, item 4).

In the spirit of the CTDC dashboard (seed 000, Figure 2) and Microsoft's Data Showcase: a
user picks up to `reporting_length` attribute values and sees the DP aggregate (protected)
count of that combination, the synthetic count, and their comparability; per-variable charts
of the synthetic records matching the selection use the codebook's denominators (section 6:
binary variables among records with any information in their group, categorical ones among
records with a known value). The page states epsilon and delta and what fabrication means for
combinations longer than the reporting length.

It holds only what the public folder already publishes: the DP aggregates (aggregates.csv)
and the synthetic records (synthetic.csv), the latter as one byte (or two) per cell, column
by column, base64 (a 260k-row release is a few MB). No server, no network, no external
script: inline CSS, JS and data; it opens from disk.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ctdc_harmonizer.codebook import BINARY_TRUE, Codebook
from ctdc_harmonizer.synthesis.fit import DELIMITER, SEPARATOR

EXPLORER_FILE = "explorer.html"
# The page itself (inline CSS and JS; __TITLE__ and __DATA__ filled in here).
PAGE = Path(__file__).with_name("explorer_page.html")


def comparability(dp: int | None, synthetic: int) -> float | None:
    """The smaller count over the larger, in % (100: equal; None: no DP count released).
    The dashboard's example: 524 synthetic against 795 protected is 65.9%."""
    if dp is None:
        return None
    high = max(dp, synthetic)
    if high == 0:
        return 100.0
    return math.floor(1000 * min(max(dp, 0), synthetic) / high + 0.5) / 10  # as the page rounds


def _encode(codes: np.ndarray, width: int) -> str:
    dtype = np.uint8 if width == 1 else np.dtype("<u2")
    return base64.b64encode(codes.astype(dtype).tobytes()).decode("ascii")


def _column_payload(
    name: str, strings: pd.Series, released: set[str], codebook: Codebook
) -> tuple[dict, str]:
    """A column's values (index 0: NULL; then the codebook's order, then the rest sorted):
    those of the synthetic records and those the aggregates release; its rows as codes."""
    var = next(v for v in codebook.variables if v.name == name)
    present = (set(strings.unique()) | released) - {""}
    known = [v for v in var.allowed if v in present] if var.type != "country" else []
    values = ["", *known, *sorted(present - set(known))]
    codes = pd.Categorical(strings, categories=values).codes
    width = 1 if len(values) <= 256 else 2
    meta = {
        "name": name,
        "label": var.label,
        "group": var.group,
        "type": var.type,
        "values": values,
        "width": width,
    }
    return meta, _encode(codes, width)


def _released(combos: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Every attribute of every released combination ("col:value", indexed by its row)."""
    parts = combos["combination"].str.split(DELIMITER).explode()
    columns = parts.str.split(SEPARATOR, n=1).str[0]
    return parts, columns


def payload(
    aggregates: pd.DataFrame, synthetic: pd.DataFrame, metadata: dict, codebook: Codebook
) -> dict:
    """What the page embeds: public figures only. `aggregates`: aggregates.csv (its first row
    the protected number of records); `synthetic`: synthetic.csv as strings (NULL '').

    A combination is keyed compactly as "column index.value code" pairs in codebook order
    ("3.2;5.1"): several times smaller than its text at a few hundred thousand combinations.
    """
    method = metadata["method"]
    head = aggregates[aggregates["length"] == 0]
    combos = aggregates[aggregates["length"] > 0].reset_index(drop=True)
    parts, part_columns = _released(combos)
    columns, codes, tokens = [], [], {}
    for index, name in enumerate(codebook.columns):
        prefix = name + SEPARATOR
        released = {p[len(prefix) :] for p in parts[part_columns == name].unique()}
        meta, encoded = _column_payload(name, synthetic[name].astype(str), released, codebook)
        columns.append(meta)
        codes.append(encoded)
        tokens.update({prefix + v: f"{index}.{code}" for code, v in enumerate(meta["values"])})
    keys = parts.map(tokens).groupby(level=0).agg(";".join) if len(parts) else pd.Series()
    return {
        "title": metadata.get("title", ""),
        "release": metadata["version"]["release"],
        "epsilon": method["epsilon"],
        "delta": method["delta"],
        "reporting_length": method["reporting_length"],
        "protected_records": int(head["count"].iloc[0]) if len(head) else None,
        "synthetic_rows": len(synthetic),
        "binary_true": BINARY_TRUE,
        "groups": codebook.groups,
        "columns": columns,
        "codes": codes,
        "aggregates": dict(zip(keys.tolist(), combos["count"].astype(int).tolist(), strict=True)),
    }


def render(
    aggregates: pd.DataFrame, synthetic: pd.DataFrame, metadata: dict, codebook: Codebook
) -> str:
    data = payload(aggregates, synthetic, metadata, codebook)
    # JSON inside <script>: "</" could close the element; "<\/" reads the same to JSON.
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")
    title = html.escape(f"Explore the synthetic data, release {data['release']}")
    page = PAGE.read_text(encoding="utf-8")
    return page.replace("__TITLE__", title).replace("__DATA__", text)


def write(public_dir: Path, codebook: Codebook) -> Path:
    """The page from a public folder's own files (what the public can check it against)."""
    aggregates = pd.read_csv(public_dir / "aggregates.csv", dtype={"combination": str})
    aggregates["combination"] = aggregates["combination"].fillna("")
    synthetic = pd.read_csv(public_dir / "synthetic.csv", dtype=str, keep_default_na=False)
    metadata = json.loads((public_dir / "metadata.json").read_text("utf-8"))
    target = public_dir / EXPLORER_FILE
    target.write_text(render(aggregates, synthetic, metadata, codebook), encoding="utf-8")
    return target
