"""HTML of the release report: tables and inline SVG bar charts, every text escaped."""

from __future__ import annotations

from html import escape

OUTCOME_COLOURS = {
    "harmonized": "#2b8a3e",
    "rejected": "#c92a2a",
    "excluded": "#e67700",
    "erased": "#5f3dc4",
    "duplicates_merged": "#868e96",
}
STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#212529;background:#fff}
h1{font-size:1.4rem;margin:0 0 .3rem} h2{font-size:1.1rem;margin:1.6rem 0 .4rem}
table{border-collapse:collapse;margin:.3rem 0 1rem;font-size:.9rem}
th,td{border:1px solid #dee2e6;padding:.25rem .6rem;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums} th{background:#f1f3f5}
.ok{color:#2b8a3e;font-weight:600} .bad{color:#c92a2a;font-weight:600}
.muted{color:#868e96} .legend span{margin-right:1rem} svg text{font-size:12px}
"""


def _e(value) -> str:
    return escape("" if value is None else str(value))


def table(
    rows: list[dict], columns: list[str], numeric: set[str] = frozenset(), empty: str = "none"
) -> str:
    if not rows:
        return f'<p class="muted">{_e(empty)}</p>'
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{_e(r.get(c))}</td>' if c in numeric else f"<td>{_e(r.get(c))}</td>"
            for c in columns
        )
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def stacked_bars(rows: list[dict], label: str, parts: dict[str, str], width: int = 640) -> str:
    """One horizontal bar per row, split into parts (e.g. outcomes of a partner's rows)."""
    if not rows:
        return ""
    total = max(sum(int(r.get(p) or 0) for p in parts) for r in rows) or 1
    left, bar_h, gap = 210, 18, 8
    height = len(rows) * (bar_h + gap) + 4
    shapes = []
    for i, row in enumerate(rows):
        y = i * (bar_h + gap) + 2
        shapes.append(f'<text x="0" y="{y + 13}">{_e(row[label])}</text>')
        x = float(left)
        for part, colour in parts.items():
            value = int(row.get(part) or 0)
            w = (width - left - 60) * value / total
            if w > 0:
                shapes.append(
                    f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colour}">'
                    f"<title>{_e(part)}: {value}</title></rect>"
                )
            x += w
        shapes.append(
            f'<text x="{x + 4:.1f}" y="{y + 13}">{sum(int(row.get(p) or 0) for p in parts)}</text>'
        )
    legend = "".join(
        f'<span><svg width="10" height="10"><rect width="10" height="10" fill="{c}"/></svg> '
        f"{_e(p)}</span>"
        for p, c in parts.items()
    )
    svg = f'<svg role="img" width="{width}" height="{height}">{"".join(shapes)}</svg>'
    return f'<div class="legend">{legend}</div>{svg}'


def bars(rows: list[dict], label: str, value: str, colour: str = "#1c7ed6") -> str:
    return stacked_bars(rows, label, {value: colour})


def delta_bars(rows: list[dict], label: str, width: int = 640) -> str:
    """Signed bars around a zero line: the change of a count against the previous release."""
    if not rows:
        return ""
    biggest = max(abs(int(r["delta"])) for r in rows) or 1
    left, bar_h, gap = 210, 16, 6
    mid = left + (width - left) / 2
    half = (width - left) / 2 - 50
    shapes = []
    for i, row in enumerate(rows):
        y = i * (bar_h + gap) + 2
        delta = int(row["delta"])
        w = half * abs(delta) / biggest
        x = mid if delta >= 0 else mid - w
        colour = "#2b8a3e" if delta >= 0 else "#c92a2a"
        shapes.append(f'<text x="0" y="{y + 12}">{_e(row[label])}</text>')
        shapes.append(
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colour}"/>'
        )
        end = mid + w + 4 if delta >= 0 else mid - w - 44
        shapes.append(f'<text x="{end:.1f}" y="{y + 12}">{delta:+d}</text>')
    height = len(rows) * (bar_h + gap) + 4
    line = f'<line x1="{mid}" y1="0" x2="{mid}" y2="{height}" stroke="#adb5bd"/>'
    return f'<svg role="img" width="{width}" height="{height}">{line}{"".join(shapes)}</svg>'


def _page(title: str, body: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f"<style>{STYLE}</style></head><body>{body}</body></html>"
    )


def report_page(report: dict) -> str:
    run = report["run"]
    status = (
        '<span class="ok">published (approved)</span>'
        if run["published"]
        else f'<span class="bad">not published</span> (approval: {_e(run["approval"])})'
    )
    quality = report.get("quality") or {}
    results = report.get("quality_results") or []
    outcome_cols = ["partner", "rows_read", *OUTCOME_COLOURS]
    change = report["change"]
    parts = [
        f"<h1>Release {_e(report['release'])}</h1>",
        f"<p>{_e(report['rows'])} harmonized rows · codebook v{_e(report['codebook'])} · "
        f"run {_e(run['run_id'])} ({_e(run['state'])}) · {status}</p>",
        "<h2>Reconciliation per partner</h2>",
        stacked_bars(report["reconciliation"], "partner", OUTCOME_COLOURS),
        table(report["reconciliation"], outcome_cols, set(outcome_cols[1:])),
    ]
    if report.get("partners_without_delivery"):
        parts.append(f"<p>No delivery: {_e(', '.join(report['partners_without_delivery']))}</p>")
    by_reason: dict[str, int] = {}
    for r in report["rejects"]:
        by_reason[r["reason"]] = by_reason.get(r["reason"], 0) + int(r["rows"])
    parts += [
        "<h2>Rejected rows by reason</h2>",
        bars([{"reason": k, "rows": v} for k, v in by_reason.items()], "reason", "rows", "#c92a2a"),
        table(report["rejects"], ["partner", "reason", "column", "rows"], {"rows"}),
        "<h2>Unmapped values (restricted list)</h2>",
        table(report["unmapped"], list((report["unmapped"] or [{}])[0]), {"count"}),
        "<h2>Values set to NULL</h2>",
        table(report["value_issues"], ["partner", "field", "issue", "count"], {"count"}),
        "<h2>Quality (Great Expectations)</h2>",
        f"<p>{_e(quality.get('evaluated'))} expectations, {_e(quality.get('failed'))} failed, "
        f"{_e(quality.get('warnings'))} warnings.</p>",
        table(
            [r for r in results if not r.get("success")],
            ["expectation", "column", "severity", "unexpected_count"],
            {"unexpected_count"},
            empty="every expectation met",
        ),
        "<h2>Change against the previous release</h2>",
    ]
    if change["previous"] is None:
        parts.append('<p class="muted">no previous release in the same folder</p>')
    else:
        parts += [
            f"<p>Previous release: {_e(change['previous'])}. Harmonized rows per partner:</p>",
            delta_bars(change["partners"], "partner"),
            table(
                change["partners"],
                ["partner", "harmonized_previous", "harmonized", "delta"],
                {"harmonized_previous", "harmonized", "delta"},
            ),
            "<p>Per variable and value (changed counts only):</p>",
            table(
                change["variables"],
                ["variable", "value", "count_previous", "count", "delta"],
                {"count_previous", "count", "delta"},
            ),
        ]
    return _page(f"Release {report['release']}", "".join(parts))


def history_page(history: list[dict], dag_id: str) -> str:
    rows = [
        {
            **h,
            "partners": ", ".join(f"{p} {n}" for p, n in sorted(h["partners"].items())),
            "published": "yes" if h["published"] else "no",
        }
        for h in history
    ]
    chart = bars([h for h in history if h["rows"] is not None][::-1], "release", "rows")
    columns = ["release", "rows", "partners", "published", "approval", "state", "run_id"]
    return _page(
        "CTDC releases",
        f"<h1>CTDC releases ({_e(dag_id)})</h1>{chart}{table(rows, columns, {'rows'})}",
    )
