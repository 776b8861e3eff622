"""The partner's receipt: written by the annual update per delivering partner (before the
approval), counts and row numbers only, and the same receipt from its tables."""

import json
import stat

import pandas as pd
import pytest

from ctdc_harmonizer import cli, samples
from ctdc_harmonizer.columns import FILE, ROW
from ctdc_harmonizer.release import receipts


@pytest.fixture(scope="module")
def landing(tmp_path_factory):
    root = tmp_path_factory.mktemp("landing")
    for partner in ("iom", "hotline", "case_management"):
        samples.generate(partner, root, n=200, seed=11)
    return root


def test_run_writes_one_receipt_per_delivering_partner(landing, tmp_path):
    out = tmp_path / "out"
    code = cli.main(
        [
            "run",
            "--landing",
            str(landing),
            "--out",
            str(out),
            "--release",
            "2025",
            "--partners",
            "iom,hotline",
        ]  # fmt: skip
    )
    assert code == 0
    folder = out / "receipts" / "2025"
    assert sorted(p.name for p in folder.iterdir()) == ["hotline", "iom"]  # not the NGO
    recon = json.loads((out / "2025" / "reconciliation.json").read_text())
    for partner in ("iom", "hotline"):
        where = folder / partner
        assert stat.S_IMODE(where.stat().st_mode) == 0o700
        for name in ("receipt.json", "receipt.html"):
            assert stat.S_IMODE((where / name).stat().st_mode) == 0o600
        receipt = receipts.read_receipt(where)
        assert receipt.schema_version == receipts.SCHEMA_VERSION
        assert receipt.kind == "run" and receipt.partner == partner and receipt.release == "2025"
        assert receipt.reconciles and receipt.ok
        # The receipt's counts are the release's per-file ledger for this partner.
        files = recon["partners"][partner]["files"]
        for entry in receipt.files:
            ledger = files[entry.file]
            assert entry.rows_read == ledger["rows_read"] == 200
            for key in ("rejected", "excluded", "erased", "duplicates_merged", "new"):
                expected = ledger[key]
                expected = sum(expected.values()) if isinstance(expected, dict) else expected
                assert getattr(entry, key) == expected, (partner, key)
        rejected_rows = sum(r.rows for r in receipt.rejected)
        assert rejected_rows == receipt.totals.rejected
        assert all(len(r.row_numbers) == r.rows for r in receipt.rejected)
        assert sum(e.rows for e in receipt.excluded) == receipt.totals.excluded
        page = (where / "receipt.html").read_text()
        assert "<script" not in page and "http://" not in page and "https://" not in page
        # The file's hash wraps in its cell, so the table fits a laptop's screen.
        assert f"<td class='hash'>{receipt.files[0].sha256}</td>" in page
        other = "hotline" if partner == "iom" else "iom"
        assert other not in (where / "receipt.json").read_text()
    # Rerunning the release replaces each receipt as a whole.
    first = (folder / "iom" / "receipt.json").read_text()
    assert cli.main(["run", "--landing", str(landing), "--out", str(out), "--release", "2025",
                     "--partners", "iom,hotline"]) == 0  # fmt: skip
    again = receipts.read_receipt(folder / "iom")
    assert again.totals == receipts.Receipt.model_validate_json(first).totals
    assert sorted(p.name for p in (folder / "iom").iterdir()) == ["receipt.html", "receipt.json"]
    # A run of the release without the hotline's delivery leaves no receipt of it.
    assert cli.main(["run", "--landing", str(landing), "--out", str(out), "--release", "2025",
                     "--partners", "iom"]) == 0  # fmt: skip
    assert sorted(p.name for p in folder.iterdir()) == ["iom"]


def test_the_receipt_says_what_a_full_extract_did_to_the_partners_records(tmp_path):
    """A partner that sends its whole dataset again learns from its receipt which of its
    records were revised, added and retired, as the release's partner ledger counts them."""
    landing, out = tmp_path / "landing", tmp_path / "out"
    samples.generate("iom", landing, n=120, seed=11)
    run = ["run", "--landing", str(landing), "--out", str(out), "--partners", "iom"]
    assert cli.main([*run, "--release", "2024"]) == 0
    first = receipts.read_receipt(out / "receipts" / "2024" / "iom").records
    assert first is not None and first.previous == 0 and first.added == first.current > 0
    samples.generate("iom", landing, n=100, seed=12)  # the whole dataset again, changed
    assert cli.main([*run, "--release", "2025", "--accept-retirements", "iom"]) == 0
    receipt = receipts.read_receipt(out / "receipts" / "2025" / "iom")
    ledger = json.loads((out / "2025" / "reconciliation.json").read_text())["partners"]["iom"]
    records = receipt.records
    assert records == receipts.PartnerRecords.from_ledger(ledger)
    assert records.mode == "full" and records.previous == first.current
    assert records.retired.get("not_redelivered", 0) > 0  # the sample's ids changed
    retired = sum(records.retired.values())
    assert records.previous + records.added - retired - records.erased == records.current
    assert records.current == records.released + records.held_back + records.merged
    page = (out / "receipts" / "2025" / "iom" / "receipt.html").read_text()
    assert "<h2>Your records in the dataset</h2>" in page and "a full extract" in page
    row = "<tr><td>retired: not in this full extract</td><td class='n'>{}</td></tr>"
    assert row.format(records.retired["not_redelivered"]) in page
    assert f"{records.previous} before this release" in receipts.receipt_text(receipt)


def test_the_check_before_sending_gives_the_receipt_the_run_gives(landing, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["run", "--landing", str(landing), "--out", str(out), "--release", "2025"]) == 0
    for partner in ("iom", "hotline", "case_management"):
        ran = receipts.read_receipt(out / "receipts" / "2025" / partner)
        assert cli.main(["check-delivery", "--partner", partner, str(landing), "--release-year",
                         "2025", "--out", str(tmp_path / partner)]) == 0  # fmt: skip
        checked = receipts.read_receipt(tmp_path / partner)
        assert checked.totals == ran.totals, partner
        for key in ("rejected", "excluded", "unmapped", "value_issues"):
            assert getattr(checked, key) == getattr(ran, key), (partner, key)
        assert checked.records is None and ran.records is not None  # only the store knows
        strip = {"new", "revised", "unchanged"}  # what only the store can say
        assert [f.model_dump(exclude=strip) for f in checked.files] == [
            f.model_dump(exclude=strip) for f in ran.files
        ]


def test_receipt_is_written_before_approval(landing, tmp_path):
    """The command line stopped at the gate: the receipts exist, no release does."""
    from ctdc_harmonizer.pipeline import local
    from ctdc_harmonizer.pipeline.annual_update import ANNUAL_UPDATE

    out = tmp_path / "out"
    results = local.run(
        ANNUAL_UPDATE,
        until_gate=True,
        landing=str(landing),
        out=str(out),
        release="2025",
        partners=["case_management"],
    )
    written = results["write_receipts"].receipts
    assert list(written) == ["case_management"]
    assert not (out / "2025").exists()  # nothing published
    assert receipts.read_receipt(written["case_management"].json_path).totals.rows_read == 200


def test_build_receipt_groups_locates_and_keeps_to_its_partner():
    outcomes = pd.DataFrame(
        {
            FILE: ["a.csv"] * 6,
            ROW: [2, 3, 4, 5, 9, 11],
            "outcome": ["rejected", "rejected", "rejected", "harmonized", "rejected", "excluded"],
            "reason": ["bad_year", "bad_year", "bad_year", "", "no_consent", "consent_refused"],
            "column": ["year", "year", "year", "", "consent", "consent"],
        }
    )
    removed = pd.DataFrame({FILE: ["a.csv"], ROW: [7], "outcome": ["erased"]})
    unmapped = pd.DataFrame(
        {
            "partner": ["p", "q", "p"],
            "field": ["sex", "sex", "sex"],
            "source_value": ["<b>X</b>", "OTHER-PARTNER", ""],
            "count": ["6", "9", "3"],
            "note": ["", "", "2 value(s) seen fewer than 5 times withheld"],
        }
    )
    receipt = receipts.build_receipt(
        kind="check",
        partner="p",
        release=None,
        files={"a.csv": {"rows_read": 7, "sha256": "0" * 64, "size_bytes": 10}},
        outcomes=outcomes,
        removed=removed,
        unmapped=unmapped,
        issues=pd.DataFrame(columns=["partner", "field", "issue", "count"]),
        coverage=None,
        unmapped_min_rows=5,
    )
    assert receipt.reconciles and receipt.totals.erased == 1
    bad = {(r.column, r.reason): r.row_numbers for r in receipt.rejected}
    assert bad == {("year", "bad_year"): [2, 3, 4], ("consent", "no_consent"): [9]}
    assert [(e.rule, e.rows) for e in receipt.excluded] == [("consent_refused", 1)]
    assert [u.source_value for u in receipt.unmapped] == ["<b>X</b>", ""]  # not partner q's
    page = receipts.render_html(receipt)
    assert "&lt;b&gt;X&lt;/b&gt;" in page and "<b>X</b>" not in page
    assert "OTHER-PARTNER" not in page
    assert receipts.row_ranges([2, 3, 4, 9]) == "2-4, 9"
    assert "more row(s)" in receipts.row_ranges(list(range(1, 1000, 2)), limit=3)
    text = receipts.receipt_text(receipt)
    assert "year: bad_year, 3 row(s): 2-4" in text


def test_counts_that_do_not_add_up_are_not_ok():
    receipt = receipts.build_receipt(
        kind="check",
        partner="p",
        release=None,
        files={"a.csv": {"rows_read": 3}},
        outcomes=pd.DataFrame(
            {FILE: ["a.csv"], ROW: [2], "outcome": ["harmonized"], "reason": [""], "column": [""]}
        ),  # fmt: skip
        removed=pd.DataFrame(columns=[FILE, ROW, "outcome"]),
        unmapped=pd.DataFrame(),
        issues=pd.DataFrame(),
        coverage=None,
        unmapped_min_rows=5,
    )
    assert not receipt.reconciles and not receipt.ok
    assert "DOES NOT RECONCILE" in receipts.receipt_text(receipt)
