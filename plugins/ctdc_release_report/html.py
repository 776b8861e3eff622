"""HTML of the release report: tables and inline SVG bar charts, every text escaped."""

from __future__ import annotations

from html import escape

from ctdc_harmonizer.synthesis.views import LENGTH_FIGURES

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
.box{border:1px solid #dee2e6;border-left:6px solid #1c7ed6;padding:.6rem 1rem;margin:.6rem 0}
.box.bad{border-left-color:#c92a2a;color:inherit;font-weight:normal}
details{margin:.2rem 0} summary{cursor:pointer}
"""
RUN_LINK = "/dags/{dag}/runs/{run}"  # the run's page in the Airflow UI
TAB_LINK = "/dags/{dag}/runs/{run}/plugin/release-report"  # the run tab (this app, framed)
STATE_WORDS = {
    "queued": "queued: waiting for a free run slot of the deployment (max_active_runs or "
    "parallelism); it starts by itself",
    "running": "running",
    "success": "succeeded",
    "failed": "failed",
}


# The approval task's state, for a reader: "success" alone would also be a rejection
# (ApprovalOperator succeeds either way and skips what follows a "Reject").
APPROVAL_WORDS = {
    "awaiting_input": "awaiting approval (Required actions)",
    "deferred": "awaiting approval (Required actions)",
    "upstream_failed": "not asked: an earlier step failed",
    "skipped": "not asked",
    "failed": "no answer in time (the approval's response_timeout), or failed",
    "not reached": "not asked yet",
    "scheduled": "not asked yet",
    "queued": "not asked yet",
    "running": "being asked",
    # Succeeded with no answer recorded: marked success by hand, or by `dag.test`'s
    # mark_success_pattern (the demo). Nobody is named, nothing guessed.
    "success": "passed, no answer recorded",
}


def approval_text(state: str | None, decision: dict | None = None) -> str:
    """What happened at the approval: the recorded answer and who gave it where there is one
    (approval.ReleaseApproval keeps it), else the approval task's state in words."""
    if decision and decision.get("chosen"):
        answer = "rejected" if "Reject" in decision["chosen"] else "approved"
        return f"{answer} by {decision['by']}" if decision.get("by") else answer
    return APPROVAL_WORDS.get(state or "not reached", state or "")


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


def _link(template: str, dag: str, run: str, text: str) -> str:
    from urllib.parse import quote

    href = template.format(dag=quote(dag, safe=""), run=quote(run, safe=""))
    return f'<a href="{_e(href)}" target="_top">{_e(text)}</a>'


def note_page(title: str, text: str) -> str:
    return _page(title, f"<h1>{_e(title)}</h1><p>{_e(text)}</p>")


def failures_box(failures: list[dict], outcome: str | None) -> str:
    """Which step failed, for which partner, the value-free message and what to do."""
    if not failures and not outcome:
        return ""
    parts = ['<div class="box bad"><h2>Why this run failed</h2>']
    if outcome:
        parts.append(f"<p>{_e(outcome)}</p>")
    for f in failures:
        partner = f" for partner <b>{_e(f['partner'])}</b>" if f.get("partner") else ""
        parts.append(
            f"<p>Step <b>{_e(f.get('task'))}</b> failed{partner} "
            f"(reason: {_e(f.get('code'))}):<br>{_e(f.get('message'))}</p>"
            f"<p><b>What to do:</b> {_e(f.get('advice'))}</p>"
        )
    return "".join(parts) + "</div>"


HEALTHY_COLUMNS = [
    "partner",
    "files",
    "rows_read",
    *OUTCOME_COLOURS,
    "new",
    "revised",
    "unchanged",
    "retired",
    "current",
]


def healthy_partners(healthy: dict | None) -> str:
    """A failed run's partners whose work was checked: where their rows went and what they
    would change in the store (counts kept by `outcome`), their rejected rows by reason."""
    if not healthy or not healthy.get("partners"):
        return ""
    rows = healthy["partners"]
    names = ", ".join(r["partner"] for r in rows)
    return "".join(
        [
            "<h2>The other partners' checked work</h2>",
            f"<p>The chains of {_e(names)} succeeded: their rows were read, de-identified, "
            "harmonized and checked against their contracts and the codebook. Nothing was "
            "committed or published; a new run, once the failing delivery is corrected, "
            "harmonizes them again. Where each partner's delivered rows went, and what it "
            "would change in the store:</p>",
            stacked_bars(rows, "partner", OUTCOME_COLOURS),
            table(rows, HEALTHY_COLUMNS, set(HEALTHY_COLUMNS[1:])),
            "<h2>Their rejected rows by reason</h2>",
            table(
                healthy.get("rejected") or [],
                ["partner", "reason", "column", "rows"],
                {"rows"},
                empty="no rejected row",
            ),
        ]
    )


def steps_table(steps: list[dict]) -> str:
    rows = [{**s, "partner": s["partner"] or ""} for s in steps]
    return table(rows, ["step", "partner", "state"], empty="no step has started yet")


def status_page(status: dict) -> str:
    """A run without a release report: where it stands, and for a failed run, why."""
    state = status["state"]
    release = status.get("release") or "(not planned yet)"
    refused = any(f.get("code") == "ReleaseLockedError" for f in status["failures"])
    heading = (
        "Run refused: another run holds the store"
        if refused and state == "failed"
        else f"Run of release {release}: {STATE_WORDS.get(state, state)}"
    )
    parts = [
        f"<h1>{_e(heading)}</h1>",
        f"<p>Run {_e(status['run_id'])} ({_e(status['run_type'])}, {_e(status['run_after'])})</p>",
    ]
    if state == "failed":
        parts.append(failures_box(status["failures"], status.get("outcome")))
        if not status["failures"] and not status.get("outcome"):
            parts.append(
                '<div class="box bad"><p>The run failed before any step recorded why (e.g. '
                "marked failed by hand, or a task killed). Open the run's failed task "
                "log.</p></div>"
            )
        parts.append(healthy_partners(status.get("healthy")))
    elif state in ("running", "queued"):
        parts.append(
            '<div class="box"><p>The release report appears once <b>summarize_release</b> has '
            "finished; <b>approve</b> then waits under <i>Required actions</i>. Reload this "
            "tab to follow the run.</p></div>"
        )
    parts += ["<h2>Steps</h2>", steps_table(status["steps"])]
    return _page(f"Run {status['run_id']}", "".join(parts))


def _fmt(value, digits: int = 4) -> str:
    if isinstance(value, bool):  # for a reader, not Python's True or False
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return "" if value is None else str(value)


LENGTH_HEADINGS = {
    "length": "combination length",
    "combinations_synthetic": "combinations in the synthetic data",
    "mean_absolute_error": "mean abs. error",
    "mean_relative_error": "mean rel. error",
}
RESTRICTED_NOTE = (
    "The restricted view of the comparability (the synthetic data against the sensitive data) "
    "is for the data team: the users who may approve releases."
)


def _length_table(rows: list[dict], reference: str) -> str:
    """Figures by combination length; `reference` names what the synthetic data is compared
    with (the DP aggregates, or the sensitive data)."""
    headings = LENGTH_HEADINGS | {
        "combinations_reference": f"combinations in {reference}",
        "only_in_synthetic": f"only in synthetic (absent from {reference})",
        "only_in_reference": f"only in {reference} (not reproduced)",
    }
    order = ["length", *LENGTH_FIGURES]
    shown = [{headings[k]: _fmt(r.get(k)) for k in order} for r in rows]
    names = [headings[k] for k in order]
    return table(shown, names, set(names[1:]), empty="no figures")


def comparability_sections(data: dict, evaluated: dict) -> list[str]:
    """The public view for every reader; the restricted view for those allowed (else one
    sentence saying whom it is for). Summary figures by length only (synthesis/views.py)."""
    parts = ["<h2>Comparability (public view): synthetic data vs the DP aggregates</h2>"]
    public = data.get("public_view")
    if public:
        parts += [
            f"<p>{_e(public['synthetic_records'])} synthetic records ({_e(public['sampler'])} "
            "sampler) against the published differentially private aggregates, by "
            "combination length (the public comparability report):</p>",
            _length_table(public["by_length"], "the DP aggregates"),
        ]
    elif evaluated.get("mae_vs_dp_by_length"):  # evaluated, not published yet
        rows = [
            {"length": k, "mean_absolute_error": v}
            for k, v in (evaluated["mae_vs_dp_by_length"] or {}).items()
        ]
        parts.append(_length_table(rows, "the DP aggregates"))
    else:
        parts.append('<p class="muted">not evaluated yet</p>')
    if not data.get("restricted_allowed"):
        return [*parts, f"<p>{_e(RESTRICTED_NOTE)}</p>"]
    parts.append(
        "<h2>Comparability (restricted view): synthetic data vs the sensitive data</h2>"
        '<p class="muted">Shown to the data team only. Summary figures by combination length '
        "and totals; the detailed restricted report stays in the restricted folder.</p>"
    )
    restricted = data.get("restricted_view")
    if not restricted:
        return [*parts, '<p class="muted">not written yet (the run has not evaluated)</p>']
    parts.append(
        f"<p>{_e(restricted['sensitive_records'])} records in the sensitive table (after "
        "suppression), the synthetic data's combination counts against theirs:</p>"
    )
    for entry in restricted["samplers"]:
        published = " (published)" if entry["sampler"] == restricted["published_sampler"] else ""
        parts += [
            f"<h3>{_e(entry['sampler'])} sampler{_e(published)}: mean abs. error in all "
            f"{_e(_fmt(entry['mean_absolute_error_all']))}</h3>",
            _length_table(entry["by_length"], "the sensitive data"),
        ]
    verdict = restricted.get("own_at_least_as_accurate")
    if verdict is not None:
        parts.append(
            f"<p>The project's sampler is {'' if verdict else 'NOT '}at least as accurate as "
            "pac-synth's on the same DP aggregates (mean abs. error against the sensitive "
            "counts, all combinations).</p>"
        )
    totals = []
    risk, suppression = restricted.get("risk") or {}, restricted.get("suppression") or {}
    if risk:
        totals += [
            {
                "figure": f"equivalence classes (k = {risk['k']})",
                "value": risk["equivalence_classes"],
            },
            {"figure": "classes smaller than k", "value": risk["classes_below_k"]},
            {"figure": "records in them", "value": risk["records_in_classes_below_k"]},
            {"figure": "share of records below k", "value": _fmt(risk["share_of_records_below_k"])},
        ]
    if suppression:
        totals += [
            {
                "figure": "variables checked for suppression",
                "value": suppression["variables_checked"],
            },
            {
                "figure": "rare value threshold (records)",
                "value": suppression["rare_value_threshold"],
            },
            {"figure": "cells set to null", "value": suppression["cells_set_to_null"]},
        ]
    if totals:
        parts += [
            "<h3>Disclosure risk and suppression (totals)</h3>",
            table(totals, ["figure", "value"], {"value"}),
        ]
    return parts


def synthesis_page(data: dict, prefix: str) -> str:
    """The synthesis run's tab: what it spent and produced, or why it has not."""
    from urllib.parse import quote

    status, results, ledger = data["status"], data["results"], data["ledger"]
    plan = results.get("plan_synthesis") or {}
    release = plan.get("release") or "(not planned yet)"
    parts = [
        f"<h1>Synthesis of release {_e(release)}: "
        f"{_e(STATE_WORDS.get(status['state'], status['state']))}</h1>",
        f"<p>Run {_e(status['run_id'])} ({_e(status['run_type'])})</p>",
    ]
    if plan.get("superseded"):
        parts.append(
            f'<div class="box"><p>Also queued, superseded by this release and not synthesized '
            f"by this run: {_e(', '.join(plan['superseded']))}. Trigger this DAG with a "
            "release label to synthesize one of them.</p></div>"
        )
    if status["state"] == "failed":
        parts.append(failures_box(status["failures"], status.get("outcome")))
    dp = (plan.get("config") or {}).get("dp") or {}
    budget = (plan.get("config") or {}).get("budget") or {}
    fitted = results.get("fit_aggregates") or {}
    risk = results.get("disclosure_risk") or {}
    suppressed = results.get("suppress") or {}
    sample = results.get("sample") or {}
    published = results.get("publish") or {}
    if "error" in ledger:
        spent = f"ledger not readable ({ledger['error']})"
    elif ledger:
        spent = (
            f"ε {_fmt(ledger['epsilon'])} and δ {_fmt(ledger['delta'])} counted against release "
            f"{_e(release)} ({ledger['fits']} fit(s) recorded); lifetime budget "
            f"ε {_fmt(budget.get('lifetime_epsilon'))}, δ {_fmt(budget.get('lifetime_delta'))}"
        )
    else:
        spent = "not planned yet"
    figures = [
        {"figure": "ε of this fit (parameters)", "value": _fmt(dp.get("epsilon"))},
        {"figure": "δ of this fit (parameters)", "value": _fmt(dp.get("delta"))},
        {"figure": "ε spent by this run", "value": _fmt(fitted.get("epsilon_spent_now"))},
        {"figure": "aggregates reused (nothing spent)", "value": _fmt(fitted.get("reused"))},
        {
            "figure": "records in classes below k",
            "value": _fmt(risk.get("records_in_classes_below_k")),
        },
        {
            "figure": "cells suppressed (set to null)",
            "value": _fmt(suppressed.get("cells_set_to_null")),
        },
        {"figure": "released combinations", "value": _fmt(fitted.get("combinations"))},
        {"figure": "synthetic records", "value": _fmt(sample.get("rows") or published.get("rows"))},
    ]
    parts += [
        "<h2>Privacy budget</h2>",
        f"<p>{_e(spent)}</p>",
        table(figures, ["figure", "value"], {"value"}),
    ]
    parts += comparability_sections(data, results.get("evaluate") or {})
    if data["files"]:
        links = "".join(
            f'<li><a href="{_e(prefix)}/files/{_e(quote(status["run_id"], safe=""))}/'
            f'{_e(quote(name))}">{_e(name)}</a></li>'
            for name in data["files"]
        )
        parts += ["<h2>Public files</h2>", f"<ul>{links}</ul>"]
    parts += ["<h2>Steps</h2>", steps_table(status["steps"])]
    return _page(f"Synthesis {release}", "".join(parts))


def _page(title: str, body: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f"<style>{STYLE}</style></head><body>{body}</body></html>"
    )


def report_page(report: dict, status: dict | None = None) -> str:
    run = report["run"]
    approval = _e(approval_text(run["approval"], run.get("decision")))
    status_text = (
        f'<span class="ok">published</span> (approval: {approval})'
        if run["published"]
        else f'<span class="bad">not published</span> (approval: {approval})'
    )
    quality = report.get("quality") or {}
    results = report.get("quality_results") or []
    outcome_cols = ["partner", "rows_read", *OUTCOME_COLOURS]
    change = report["change"]
    failed = (
        failures_box(status["failures"], status.get("outcome"))
        if status and status["state"] == "failed"
        else ""
    )
    parts = [
        f"<h1>Release {_e(report['release'])}</h1>",
        f"<p>{_e(report['rows'])} harmonized rows · codebook v{_e(report['codebook'])} · "
        f"run {_e(run['run_id'])} ({_e(run['state'])}) · {status_text}</p>",
        failed,
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
            f"<p>Previous release: {_e(change['previous'])}. Records in the release per "
            "partner (a partner that did not deliver keeps its records):</p>",
            delta_bars(change["partners"], "partner"),
            table(
                change["partners"],
                ["partner", "released_previous", "released", "delta"],
                {"released_previous", "released", "delta"},
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
    """One row per release (its newest run), its earlier runs folded underneath; run ids link
    to the run and to its report tab; a failed run shows its reason."""
    by_release: dict[str, list[dict]] = {}
    for h in history:  # newest first
        by_release.setdefault(h["release"] or "(not planned)", []).append(h)

    def run_cell(h: dict) -> str:
        state = h["state"] + (f": {h['reason']}" if h.get("reason") else "")
        return (
            f"{_link(RUN_LINK, dag_id, h['run_id'], h['run_id'])} · "
            f"{_link(TAB_LINK, dag_id, h['run_id'], 'report')} · {_e(state)}"
        )

    head = "".join(
        f"<th>{c}</th>" for c in ("release", "rows", "partners", "published", "approval", "runs")
    )
    body = []
    for release, runs in by_release.items():
        # The release's figures: its published run, else its newest run with a summary (a
        # later failed rerun must not hide what is published); the runs column is newest first.
        newest = next(
            (h for h in runs if h["published"]),
            next((h for h in runs if h["rows"] is not None), runs[0]),
        )
        earlier = ""
        if len(runs) > 1:
            items = "".join(f"<li>{run_cell(h)}</li>" for h in runs[1:])
            earlier = (
                f"<details><summary>{len(runs) - 1} earlier run(s)</summary>"
                f"<ul>{items}</ul></details>"
            )
        partners = ", ".join(f"{p} {n}" for p, n in sorted((newest["partners"] or {}).items()))
        published = "no"
        if newest["published"]:
            # Named when a later run is listed first: that run did not touch the release.
            published = (
                "yes"
                if newest is runs[0]
                else f"yes, by {_link(RUN_LINK, dag_id, newest['run_id'], newest['run_id'])}"
            )
        body.append(
            f'<tr><td>{_e(release)}</td><td class="n">{_e(newest["rows"])}</td>'
            f"<td>{_e(partners)}</td><td>{published}</td>"
            f"<td>{_e(approval_text(newest['approval'], newest.get('decision')))}</td>"
            f"<td>{run_cell(runs[0])}{earlier}</td></tr>"
        )
    latest = [
        next(h for h in runs if h["rows"] is not None)
        for runs in by_release.values()
        if any(h["rows"] is not None for h in runs)
    ]
    chart = bars(latest[::-1], "release", "rows")
    listing = (
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        if body
        else '<p class="muted">no run yet</p>'
    )
    return _page("CTDC releases", f"<h1>CTDC releases ({_e(dag_id)})</h1>{chart}{listing}")
