"""Comparability of synthetic counts: JSON + an HTML page with inline SVG charts (no CDN).

For combination lengths 1..reporting length: the error of synthetic counts against the DP
aggregates and against the sensitive counts (mean absolute and mean relative error, overall and
by count bucket), fabricated combinations (in synthetic, absent from the sensitive data) and
suppressed ones (in the sensitive data, absent from synthetic), and per-variable shares with the
codebook's denominator rule (section 6). Combinations are counted as pac-synth counts them
(a test checks equality with `Dataset.get_aggregates`), several times faster.

The full report is restricted (it holds sensitive counts). `public_report` keeps only what
compares the synthetic data with the DP aggregates, which are public anyway.
"""

from __future__ import annotations

import html
import math

import numpy as np
import pandas as pd

from ctdc_harmonizer.codebook import BINARY_TRUE, Codebook
from ctdc_harmonizer.synthesis.fit import DELIMITER, SEPARATOR

SERIES_COLOURS = ["#1b6ca8", "#e07b39", "#5a9e4b", "#8e6bb3"]


def combination_counts(strings: pd.DataFrame, reporting_length: int, codebook: Codebook):
    """Exact counts of every non-empty attribute combination up to the reporting length.

    The same combinations pac-synth's `Dataset.get_aggregates` counts (empty values are not
    attributes), keyed "col:value;col:value" in codebook order. Vectorised with integer codes:
    column sets are walked depth-first in codebook order, each level keeping only the records
    where every column so far is non-empty (most binaries are empty in most records), so a
    combination costs the records that hold its first columns, not the whole table; one
    `bincount` per column set.
    """
    columns = [c for c in codebook.columns if c in strings.columns]
    codes, labels = [], []
    for name in columns:
        inverse, uniques = pd.factorize(strings[name], sort=True)  # hashing: faster than np.unique
        uniques = np.asarray(uniques, dtype=object)
        # code 0 is the empty value (np.unique sorts "" first when present)
        if len(uniques) and uniques[0] == "":
            codes.append(inverse.astype(np.int64))
            labels.append(uniques.astype(object))
        else:
            codes.append(inverse.astype(np.int64) + 1)
            labels.append(np.r_[[""], uniques].astype(object))
    keys, counts = [], []

    def walk(combo: tuple[int, ...], rows: np.ndarray, flat: np.ndarray, size: int) -> None:
        if size <= 4 * len(flat) + 1_000_000:
            tally = np.bincount(flat, minlength=size)
            cells = np.flatnonzero(tally)
            tally = tally[cells]
        else:  # long combinations of wide columns: too many cells for a dense tally
            cells, tally = np.unique(flat, return_counts=True)
        if not len(cells):
            return
        index = np.unravel_index(cells, [len(labels[c]) for c in combo])
        key = None
        for c, i in zip(combo, index, strict=True):
            part = columns[c] + SEPARATOR + labels[c][i]
            key = part if key is None else key + DELIMITER + part
        keys.append(key)
        counts.append(tally)
        if len(combo) == reporting_length:
            return
        for nxt in range(combo[-1] + 1, len(columns)):
            values = codes[nxt][rows]
            held = values > 0
            if held.any():
                width = len(labels[nxt])
                walk((*combo, nxt), rows[held], flat[held] * width + values[held], size * width)

    if reporting_length >= 1:
        for first in range(len(columns)):
            rows = np.flatnonzero(codes[first] > 0)
            walk((first,), rows, codes[first][rows], len(labels[first]))
    if not keys:
        return pd.Series(dtype="int64")
    return pd.Series(np.concatenate(counts), index=np.concatenate(keys), dtype="int64")


def _bucket_labels(buckets: list[int]) -> list[str]:
    edges = [0, *buckets]
    labels = [f"{lo}-{hi - 1}" for lo, hi in zip(edges, edges[1:], strict=False)]
    return [*labels, f"{buckets[-1]}+"]


def compare(reference: pd.Series, synthetic: pd.Series, buckets: list[int]) -> dict:
    """Errors of synthetic counts against reference counts, by combination length and bucket."""
    both = pd.concat({"ref": reference, "syn": synthetic}, axis=1).fillna(0)
    both.index = both.index.astype(object)  # an empty side (nothing released) is not text
    both["length"] = both.index.to_series().astype(str).str.count(DELIMITER) + 1
    both["abs"] = (both["syn"] - both["ref"]).abs()
    both["rel"] = both["abs"] / both["ref"].where(both["ref"] > 0)
    labels = _bucket_labels(buckets)
    both["bucket"] = pd.cut(
        both["ref"], bins=[-1, *[b - 1 for b in buckets], math.inf], labels=labels
    )
    out = {}
    for length, part in both.groupby("length"):
        in_ref = part["ref"] > 0
        out[str(int(length))] = {
            "combinations_reference": int(in_ref.sum()),
            "combinations_synthetic": int((part["syn"] > 0).sum()),
            "mean_absolute_error": round(float(part["abs"].mean()), 4),
            "mean_relative_error": round(float(part.loc[in_ref, "rel"].mean()), 4)
            if in_ref.any()
            else None,
            "only_in_synthetic": int(((part["syn"] > 0) & ~in_ref).sum()),
            "only_in_reference": int((in_ref & (part["syn"] == 0)).sum()),
            "by_bucket": {
                str(label): {
                    "combinations": int(len(group)),
                    "mean_absolute_error": round(float(group["abs"].mean()), 4),
                    "mean_relative_error": round(float(group["rel"].mean()), 4)
                    if group["rel"].notna().any()
                    else None,
                }
                for label, group in part.groupby("bucket", observed=True)
            },
        }
    out["all"] = {  # None where nothing was counted (an empty release)
        "mean_absolute_error": round(float(both["abs"].mean()), 4) if len(both) else None,
        "mean_relative_error": round(float(both["rel"].mean()), 4)
        if both["rel"].notna().any()
        else None,
    }
    return out


def shares(strings: pd.DataFrame, codebook: Codebook) -> dict:
    """Per-variable shares (%) with the codebook's section-6 denominators.

    Binary variables: among records with any information in the variable's group (at least one
    '1' in the group). Categorical variables: among records where the variable is not NULL.
    """
    result = {}
    binaries = [v.name for v in codebook.variables if v.type == "binary"]
    true = pd.DataFrame(
        {name: strings[name].to_numpy(dtype=object) == BINARY_TRUE for name in binaries}
    )  # one comparison per column, reused by every variable of its group
    for var in codebook.variables:
        if var.type == "binary":
            group = [v.name for v in codebook.variables if v.group == var.group]
            denominator = true[group].to_numpy().any(axis=1).sum()
            count = true[var.name].sum()
            result[var.name] = {
                "1": round(100 * count / denominator, 2) if denominator else None,
                "denominator": int(denominator),
            }
        elif var.type == "categorical":
            known = strings[var.name][strings[var.name] != ""]
            pct = (known.value_counts(normalize=True) * 100).round(2)
            result[var.name] = {
                **{v: float(pct.get(v, 0.0)) for v in var.allowed},
                "denominator": int(len(known)),
            }
    return result


def comparability(
    sensitive: pd.DataFrame,
    synthetic: dict[str, pd.DataFrame],
    dp_counts: dict[str, int],
    reporting_length: int,
    codebook: Codebook,
    buckets: list[int],
) -> dict:
    """The full (restricted) report; `synthetic` maps a sampler name to its records."""
    dp = pd.Series(dp_counts, dtype="int64")
    sens = combination_counts(sensitive, reporting_length, codebook)
    report = {
        "reporting_length": reporting_length,
        "count_buckets": _bucket_labels(buckets),
        "rows": {"sensitive": len(sensitive), **{k: len(v) for k, v in synthetic.items()}},
        "samplers": {},
        "shares": {"sensitive": shares(sensitive, codebook)},
    }
    for name, frame in synthetic.items():
        syn = combination_counts(frame, reporting_length, codebook)
        report["samplers"][name] = {
            "vs_dp_aggregates": compare(dp, syn, buckets),
            "vs_sensitive": compare(sens, syn, buckets),
        }
        report["shares"][name] = shares(frame, codebook)
    report["headline"] = headline(report)
    return report


def headline(report: dict) -> dict:
    """The figures a data officer reads first, and the sampler comparison verdict."""
    out = {}
    for name, entry in report["samplers"].items():
        sens = entry["vs_sensitive"]
        lengths = [k for k in sens if k != "all"]
        out[name] = {
            "mae_vs_dp_by_length": {  # a length the aggregates lack (nothing released): None
                k: entry["vs_dp_aggregates"].get(k, {}).get("mean_absolute_error") for k in lengths
            },
            "mae_vs_sensitive_by_length": {k: sens[k]["mean_absolute_error"] for k in lengths},
            "mae_vs_sensitive_all": sens["all"]["mean_absolute_error"],
            "fabricated_combinations": sum(sens[k]["only_in_synthetic"] for k in lengths),
            "suppressed_combinations": sum(sens[k]["only_in_reference"] for k in lengths),
        }
    if {"own", "pacsynth"} <= set(out):
        own, pac = out["own"], out["pacsynth"]
        better = [
            k
            for k in own["mae_vs_sensitive_by_length"]
            if own["mae_vs_sensitive_by_length"][k] <= pac["mae_vs_sensitive_by_length"][k]
        ]
        out["own_at_least_as_accurate"] = own["mae_vs_sensitive_all"] <= pac["mae_vs_sensitive_all"]
        out["own_as_accurate_at_lengths"] = better
    return out


def public_report(report: dict, sampler: str) -> dict:
    """Only synthetic vs DP aggregates, for the published sampler: no sensitive figure."""
    entry = report["samplers"][sampler]
    return {
        "reporting_length": report["reporting_length"],
        "count_buckets": report["count_buckets"],
        "synthetic_records": report["rows"][sampler],
        "sampler": sampler,
        "synthetic_vs_dp_aggregates": entry["vs_dp_aggregates"],
        "synthetic_shares": report["shares"][sampler],
    }


# --- HTML ------------------------------------------------------------------------------------


def bar_chart(title: str, categories: list[str], series: dict[str, list[float]]) -> str:
    """A grouped horizontal bar chart as inline SVG."""
    names = list(series)
    row_h, bar_h, label_w, plot_w = 8 + 14 * len(names), 12, 230, 420
    height = 40 + row_h * len(categories) + 24
    top = max([v for vals in series.values() for v in vals if v is not None] + [1e-9])
    legend_w = label_w + sum(30 + 7 * len(name) for name in names)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{max(label_w + plot_w + 80, legend_w)}" '
        f'height="{height}" role="img" aria-label="{html.escape(title)}">',
        f'<text x="4" y="16" font-weight="bold" font-size="13">{html.escape(title)}</text>',
    ]
    x = label_w
    for i, name in enumerate(names):  # legend: entries side by side, spaced by label length
        parts.append(
            f'<rect x="{x}" y="24" width="10" height="10" fill="{SERIES_COLOURS[i % 4]}"/>'
            f'<text x="{x + 14}" y="33" font-size="11">{html.escape(name)}</text>'
        )
        x += 30 + 7 * len(name)
    for r, category in enumerate(categories):
        y0 = 40 + r * row_h
        parts.append(
            f'<text x="{label_w - 6}" y="{y0 + row_h / 2 + 4}" text-anchor="end" '
            f'font-size="11">{html.escape(category)}</text>'
        )
        for i, name in enumerate(names):
            value = series[name][r]
            width = 0 if value is None else plot_w * value / top
            y = y0 + 4 + i * 14
            shown = "n/a" if value is None else f"{value:g}"
            parts.append(
                f'<rect x="{label_w}" y="{y}" width="{width:.1f}" height="{bar_h}" '
                f'fill="{SERIES_COLOURS[i % 4]}"/>'
                f'<text x="{label_w + width + 4:.1f}" y="{y + 10}" font-size="10">{shown}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _table(headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _share_chart(title: str, share_sets: dict[str, dict], variables: list[str]) -> str:
    categories, series = [], {name: [] for name in share_sets}
    for var in variables:
        first = next(iter(share_sets.values()))[var]
        for value in [k for k in first if k != "denominator"]:
            categories.append(f"{var} = {value}")
            for name, sets in share_sets.items():
                series[name].append(sets[var].get(value))
    return bar_chart(title, categories, series)


STYLE = (
    "body{font-family:system-ui,sans-serif;margin:24px;max-width:1100px;color:#222}"
    "table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #ccc;"
    "padding:3px 8px;font-size:12px;text-align:right}th{background:#f2f2f2}"
    "h2{margin-top:32px}.note{color:#555;font-size:13px}"
)


def render_html(report: dict, title: str, public: bool, codebook: Codebook) -> str:
    """The report as one self-contained page (inline SVG, no script, no external resource)."""
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"]
    out.append(f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>")
    if public:
        entry = {"synthetic": report["synthetic_vs_dp_aggregates"]}
        out.append(
            "<p class='note'>Counts of attribute combinations in the synthetic records against "
            "the published differentially private aggregates (aggregates.csv).</p>"
        )
    else:
        entry = {}
        for name, e in report["samplers"].items():
            entry[f"{name} vs DP"] = e["vs_dp_aggregates"]
            entry[f"{name} vs sensitive"] = e["vs_sensitive"]
        h = report["headline"]
        if "own_at_least_as_accurate" in h:
            verdict = "is" if h["own_at_least_as_accurate"] else "is NOT"
            out.append(
                f"<p><b>The project's sampler {verdict} at least as accurate as pac-synth's on "
                f"the same DP aggregates</b> (mean absolute error against the sensitive counts, "
                f"all combinations); as accurate or better at lengths "
                f"{', '.join(h['own_as_accurate_at_lengths']) or 'none'}. Fabricated combinations "
                f"(in synthetic, absent from the sensitive data): project's sampler "
                f"{h['own']['fabricated_combinations']}, pac-synth's "
                f"{h['pacsynth']['fabricated_combinations']}.</p>"
            )
    lengths = [k for k in next(iter(entry.values())) if k != "all"]
    out.append(
        bar_chart(
            "Mean absolute error of combination counts, by combination length",
            [f"length {k}" for k in lengths],
            {n: [e[k]["mean_absolute_error"] for k in lengths] for n, e in entry.items()},
        )
    )
    for name, e in entry.items():
        out.append(f"<h2>{html.escape(name)}</h2>")
        rows = [
            [
                k,
                e[k]["combinations_reference"],
                e[k]["combinations_synthetic"],
                e[k]["mean_absolute_error"],
                e[k]["mean_relative_error"],
                e[k]["only_in_synthetic"],
                e[k]["only_in_reference"],
            ]
            for k in lengths
        ]
        out.append(
            _table(
                [
                    "length",
                    "combinations (reference)",
                    "combinations (synthetic)",
                    "mean abs. error",
                    "mean rel. error",
                    "only in synthetic (fabricated)",
                    "only in reference (suppressed)",
                ],
                rows,
            )
        )
        buckets = report["count_buckets"]
        out.append(
            bar_chart(
                f"{name}: mean absolute error by reference count bucket",
                [f"length {k}, count {b}" for k in lengths for b in buckets],
                {
                    "mean abs. error": [
                        e[k]["by_bucket"].get(b, {}).get("mean_absolute_error")
                        for k in lengths
                        for b in buckets
                    ]
                },
            )
        )
    share_sets = {"synthetic": report["synthetic_shares"]} if public else dict(report["shares"])
    categorical = [v.name for v in codebook.variables if v.type == "categorical"]
    binary = [v.name for v in codebook.variables if v.type == "binary"]
    out.append("<h2>Shares (%), codebook section 6 denominators</h2>")
    out.append(_share_chart("Categorical variables (% of known)", share_sets, categorical))
    out.append(
        _share_chart("Binary variables (% of records with any in group)", share_sets, binary)
    )
    out.append("</body></html>")
    return "\n".join(out)
