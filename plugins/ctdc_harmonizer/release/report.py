"""The release report: counts read from a release folder, for the approval step and the UI.

Everything here is aggregate: per partner and file, per reason, per variable and value. No row,
no row number, no source value leaves this module, except the values the release's restricted
`unmapped.csv` itself lists (the release's own rules decide which values it may hold).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ctdc_harmonizer.release.metadata import MARKER

if TYPE_CHECKING:
    from ctdc_harmonizer.codebook import Codebook

NULL_VALUE = "(null)"
OUTCOMES = ("harmonized", "rejected", "excluded", "erased", "duplicates_merged")


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _csv(path: Path) -> pd.DataFrame:
    if not path.exists():
        return pd.DataFrame()
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def releases(out: str | Path) -> list[dict]:
    """Release folders under `out` (those holding the release marker), oldest first."""
    found = []
    for marker in Path(out).glob(f"*/{MARKER}"):
        meta = _read_json(marker)
        found.append(
            {
                "release": marker.parent.name,
                "rows": int(meta.get("rows", 0)),
                "partners": sorted(meta.get("partners", {})),
                "written": marker.stat().st_mtime,
            }
        )
    return sorted(found, key=lambda r: (r["written"], r["release"]))


def previous_release(out: str | Path, release: str) -> str | None:
    """The release written just before `release` in the same folder, if any."""
    names = [r["release"] for r in releases(out)]
    if release not in names:
        return None
    index = names.index(release)
    return names[index - 1] if index > 0 else None


PARTNER_COLUMNS = [
    "partner",
    "state",
    "rows_read",
    *OUTCOMES,
    "previous",
    "added",
    "revised",
    "retired",
    "current",
    "released",
]


def reconciliation(release_dir: Path) -> pd.DataFrame:
    """One row per partner: how it came into the release (delivered, re-harmonized, carried
    forward, discontinued), where its delivered rows went, and its stored records before and
    after (counts only)."""
    recon = _read_json(release_dir / "reconciliation.json")
    rows = []
    for partner, entry in sorted(recon["partners"].items()):
        totals = entry.get("totals") or dict.fromkeys(("rows_read", *OUTCOMES), 0)
        records = entry["records"]
        rows.append(
            {"partner": partner, "state": entry["state"], "rows_read": totals["rows_read"]}
            | _outcomes(totals)
            | {
                "previous": records["previous"],
                "added": records["added"],
                "revised": records.get("revised", 0),
                "retired": sum(records["retired"].values()),
                "current": records["current"],
                "released": records["released"],
            }
        )
    return pd.DataFrame(rows, columns=PARTNER_COLUMNS)


def partner_states(release_dir: Path) -> list[dict]:
    """Per partner: its state in this release and since when it has not delivered."""
    recon = _read_json(release_dir / "reconciliation.json")
    return [
        {
            "partner": partner,
            "state": entry["state"],
            "mode": entry.get("mode"),
            "last_delivery": entry.get("last_delivery"),
            "releases_without_delivery": entry.get("releases_without_delivery", 0),
            "flagged": bool(entry.get("flagged")),
            "reharmonized": entry.get("reharmonized") or "",
        }
        for partner, entry in sorted(recon["partners"].items())
    ]


def not_read_counts(release_dir: Path) -> dict[str, dict[str, int]]:
    """Per partner, how many delivered files were not read, by reason code."""
    recon = _read_json(release_dir / "reconciliation.json")
    counts: dict[str, dict[str, int]] = {}
    for partner, entry in recon["partners"].items():
        for reason in (entry.get("not_read") or {}).values():
            code = reason.split(" ", 1)[0]  # the code, without its detail (the release)
            counts.setdefault(partner, {}).setdefault(code, 0)
            counts[partner][code] += 1
    return counts


def _outcomes(totals: dict) -> dict:
    return {
        key: sum(value.values()) if isinstance(value, dict) else int(value)
        for key, value in totals.items()
        if key in OUTCOMES
    }


def rejects_by_reason(release_dir: Path) -> pd.DataFrame:
    rejects = _csv(release_dir / "rejects.csv")
    if rejects.empty:
        return pd.DataFrame(columns=["partner", "reason", "column", "rows"])
    counted = rejects.groupby(["partner", "reason", "column"]).size().rename("rows")
    return counted.reset_index().sort_values(["partner", "rows"], ascending=[True, False])


def variable_distribution(release_dir: Path) -> pd.DataFrame:
    """Counts of every value of every variable over the release (its table has no partner)."""
    frame = pd.read_parquet(release_dir / "harmonized.parquet")
    long = frame.astype("string").melt(var_name="variable", value_name="value")
    long["value"] = long["value"].fillna(NULL_VALUE)
    counted = long.groupby(["variable", "value"]).size().rename("count").reset_index()
    return counted


def in_codebook_order(counts: pd.DataFrame, codebook: Codebook | None = None) -> pd.DataFrame:
    """Rows of (variable, value) as a reader of the codebook expects them: variables in the
    codebook's order, and each one's values NULL first, then in the codebook's order (age
    bins young to old, not "48+" before "9-17"); values it does not list (years, countries)
    after those, ascending."""
    from ctdc_harmonizer.codebook import default_codebook

    codebook = codebook or default_codebook()
    variables = {var.name: rank for rank, var in enumerate(codebook.variables)}
    listed = {
        (var.name, value): rank
        for var in codebook.variables
        for rank, value in enumerate(var.allowed)
    }
    unlisted = len(listed)  # after every listed value's rank
    ranks = pd.DataFrame(
        {
            "variable": counts["variable"].map(variables).fillna(len(variables)),
            "value": [
                -1 if value == NULL_VALUE else listed.get((variable, value), unlisted)
                for variable, value in zip(counts["variable"], counts["value"], strict=True)
            ],
        },
        index=counts.index,
    )
    order = ranks.assign(name=counts["variable"], text=counts["value"]).sort_values(
        ["variable", "name", "value", "text"], kind="stable"
    )
    return counts.loc[order.index].reset_index(drop=True)


def change(release_dir: Path, previous_dir: Path | None) -> dict:
    """Per partner (released records) and per variable value: this release against the
    previous."""
    if previous_dir is None:
        return {"previous": None, "partners": [], "variables": []}
    now, before = reconciliation(release_dir), reconciliation(previous_dir)
    partners = now[["partner", "released"]].merge(
        before[["partner", "released"]], on="partner", how="outer", suffixes=("", "_previous")
    )
    partners = partners.fillna(0).astype({"released": int, "released_previous": int})
    partners["delta"] = partners["released"] - partners["released_previous"]
    values = variable_distribution(release_dir).merge(
        variable_distribution(previous_dir),
        on=["variable", "value"],
        how="outer",
        suffixes=("", "_previous"),
    )
    values = values.fillna(0).astype({"count": int, "count_previous": int})
    values["delta"] = values["count"] - values["count_previous"]
    changed = in_codebook_order(values[values["delta"] != 0])
    return {
        "previous": previous_dir.name,
        "partners": partners.to_dict("records"),
        "variables": changed.to_dict("records"),
    }


QUALITY_FIELDS = ("expectation", "column", "severity", "success", "unexpected_count")


def _quality_results(summary: Path) -> list[dict]:
    """Each expectation's outcome and counts; observed values are left out."""
    if not summary.exists():
        return []
    return [{k: r.get(k) for k in QUALITY_FIELDS} for r in _read_json(summary)["results"]]


def build(release_dir: str | Path, previous_dir: str | Path | None = None) -> dict:
    """The whole report of a release as plain JSON-able data (counts only)."""
    release_dir = Path(release_dir)
    meta = _read_json(release_dir / MARKER)
    unmapped = _csv(release_dir / "unmapped.csv")
    issues = _csv(release_dir / "value_issues.csv")
    quality_summary = release_dir / "quality" / "summary.json"
    return {
        "release": meta.get("release", release_dir.name),
        "rows": int(meta.get("rows", 0)),
        "codebook": meta.get("codebook", {}).get("version"),
        "partner_states": partner_states(release_dir),
        "reconciliation": reconciliation(release_dir).to_dict("records"),
        "rejects": rejects_by_reason(release_dir).to_dict("records"),
        "unmapped": unmapped.to_dict("records"),
        "value_issues": issues.to_dict("records"),
        "quality": meta.get("quality", {}),
        "quality_results": _quality_results(quality_summary),
        "change": change(release_dir, Path(previous_dir) if previous_dir else None),
    }


STATE_TEXT = {
    "delivered": "delivered ({mode})",
    "reharmonized": "re-harmonized ({reharmonized})",
    "carried": "carried from {last_delivery}",
    "discontinued": "discontinued (last delivery {last_delivery})",
}


def headline(release_dir: str | Path, release: str | None = None) -> dict:
    """What the approver reads before a release is committed and handed to synthesis: per
    partner how it came in and where its records went; counts only, Markdown."""
    release_dir = Path(release_dir)
    meta = _read_json(release_dir / MARKER)
    release = release or meta.get("release", release_dir.name)
    recon = reconciliation(release_dir)
    states = {s["partner"]: s for s in partner_states(release_dir)}
    quality = meta.get("quality", {})
    lines = [
        f"**Release {release}**: {int(meta['rows'])} records from {len(recon)} partner(s).",
        "",
        "| partner | this release | read | added | revised | retired | erased | records "
        "before | after | released |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in recon.itertuples():
        state = states[r.partner]
        text = STATE_TEXT[state["state"]].format(**{k: v or "-" for k, v in state.items()})
        if state["flagged"]:
            text += f", **no delivery for {state['releases_without_delivery']} release(s)**"
        lines.append(
            f"| {r.partner} | {text} | {r.rows_read} | {r.added} | {r.revised} | {r.retired} "
            f"| {r.erased} | {r.previous} | {r.current} | {r.released} |"
        )
    not_read = not_read_counts(release_dir)
    if not_read:
        # Counts by reason only: file names are the partner's text (metadata.json lists them).
        lines += ["", "Delivered files not read (names in metadata.json):"]
        lines += [
            f"- {partner}: "
            + ", ".join(f"{reason} {count}" for reason, count in sorted(counts.items()))
            for partner, counts in sorted(not_read.items())
        ]
    lines += [
        "",
        f"Quality: {quality.get('evaluated', 0)} expectations, {quality.get('failed', 0)} failed "
        f"({quality.get('warnings', 0)} warnings).",
        "Approve to commit this release to the store, publish it and hand it to synthesis; "
        "reject to leave the store and every published release as they are.",
    ]
    return {
        "release": release,
        "rows": int(meta["rows"]),
        "report": str(release_dir),
        "partners": {r.partner: int(r.released) for r in recon.itertuples()},
        "not_read": {p: sum(c.values()) for p, c in sorted(not_read.items())},
        "body": "\n".join(lines),
    }
