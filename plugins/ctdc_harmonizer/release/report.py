"""The release report: counts read from a release folder, for the approval step and the UI.

Everything here is aggregate: per partner and file, per reason, per variable and value. No row,
no row number, no source value leaves this module, except the values the release's restricted
`unmapped.csv` itself lists (the release's own rules decide which values it may hold).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ctdc_harmonizer.release.metadata import MARKER

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


def reconciliation(release_dir: Path) -> pd.DataFrame:
    """One row per partner: rows read and where they went."""
    recon = _read_json(release_dir / "reconciliation.json")
    rows = []
    for partner, entry in sorted(recon["partners"].items()):
        totals = entry["totals"]
        rows.append({"partner": partner, "rows_read": totals["rows_read"]} | _outcomes(totals))
    return pd.DataFrame(rows, columns=["partner", "rows_read", *OUTCOMES])


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
    long["value"] = long["value"].fillna("(null)")
    counted = long.groupby(["variable", "value"]).size().rename("count").reset_index()
    return counted


def change(release_dir: Path, previous_dir: Path | None) -> dict:
    """Per partner (harmonized rows) and per variable value: this release against the previous."""
    if previous_dir is None:
        return {"previous": None, "partners": [], "variables": []}
    now, before = reconciliation(release_dir), reconciliation(previous_dir)
    partners = now[["partner", "harmonized"]].merge(
        before[["partner", "harmonized"]], on="partner", how="outer", suffixes=("", "_previous")
    )
    partners = partners.fillna(0).astype({"harmonized": int, "harmonized_previous": int})
    partners["delta"] = partners["harmonized"] - partners["harmonized_previous"]
    values = variable_distribution(release_dir).merge(
        variable_distribution(previous_dir),
        on=["variable", "value"],
        how="outer",
        suffixes=("", "_previous"),
    )
    values = values.fillna(0).astype({"count": int, "count_previous": int})
    values["delta"] = values["count"] - values["count_previous"]
    changed = values[values["delta"] != 0].sort_values(["variable", "value"])
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
        "release": release_dir.name,
        "rows": int(meta.get("rows", 0)),
        "codebook": meta.get("codebook", {}).get("version"),
        "partners_without_delivery": meta.get("partners_without_delivery", []),
        "reconciliation": reconciliation(release_dir).to_dict("records"),
        "rejects": rejects_by_reason(release_dir).to_dict("records"),
        "unmapped": unmapped.to_dict("records"),
        "value_issues": issues.to_dict("records"),
        "quality": meta.get("quality", {}),
        "quality_results": _quality_results(quality_summary),
        "change": change(release_dir, Path(previous_dir) if previous_dir else None),
    }


def headline(release_dir: str | Path) -> dict:
    """What the approver reads before a release is handed to synthesis: counts only, Markdown."""
    release_dir = Path(release_dir)
    meta = _read_json(release_dir / MARKER)
    recon = reconciliation(release_dir)
    quality = meta.get("quality", {})
    lines = [
        f"**Release {release_dir.name}**: {int(meta['rows'])} harmonized rows "
        f"from {len(recon)} partner(s).",
        "",
        "| partner | read | harmonized | rejected | excluded | erased | duplicates |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r.partner} | {r.rows_read} | {r.harmonized} | {r.rejected} | {r.excluded} "
        f"| {r.erased} | {r.duplicates_merged} |"
        for r in recon.itertuples()
    ]
    lines += [
        "",
        f"Quality: {quality.get('evaluated', 0)} expectations, {quality.get('failed', 0)} failed "
        f"({quality.get('warnings', 0)} warnings).",
    ]
    if meta.get("partners_without_delivery"):
        lines.append(f"No delivery: {', '.join(meta['partners_without_delivery'])}.")
    lines.append("Approve to hand this release to synthesis; reject to leave it unpublished.")
    return {
        "release": release_dir.name,
        "rows": int(meta["rows"]),
        "report": str(release_dir),
        "partners": {r.partner: int(r.harmonized) for r in recon.itertuples()},
        "body": "\n".join(lines),
    }
