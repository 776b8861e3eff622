"""The store as system of record: deliveries over years, modes, re-harmonization, guards,
history, a warehouse from before the store (issue 16)."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from ctdc_harmonizer import cli
from ctdc_harmonizer.columns import Outcome
from ctdc_harmonizer.errors import CtdcError
from ctdc_harmonizer.ingest.withdrawals import KEY_SEPARATOR
from ctdc_harmonizer.pipeline.local import run_annual_update
from ctdc_harmonizer.privacy.pseudonyms import keyed_hash
from ctdc_harmonizer.store import changes as rules
from ctdc_harmonizer.store.identity import content_keys, identity_keys, release_order, row_text
from ctdc_harmonizer.store.payload import decode_payloads, encode_payloads
from support.store_scenario import Scenario, build, release_rows

KEY = b"k" * 32
FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "warehouse_0004_two_releases.sqlite"
REPO_MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"


# --- the rules, on small frames ------------------------------------------------------------------


def _delivered(*rows: tuple[str, int, str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["identity", "content", "outcome"])


def _stored(*rows: tuple[str, int]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["identity", "content"])
    return frame.assign(staged_id=range(1, len(frame) + 1), case_id=range(11, len(frame) + 11))


H, R, X = Outcome.HARMONIZED, Outcome.REJECTED, Outcome.EXCLUDED


@pytest.mark.parametrize("mode", [rules.FULL, rules.INCREMENTAL])
def test_a_delivery_is_new_revised_unchanged_or_refused(mode):
    stored = _stored(("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5), ("f", 6))
    delivered = _delivered(
        ("a", 1, H), ("b", 9, H), ("n", 7, H), ("c", 3, X), ("d", 8, R), ("m", 5, R)
    )
    result = rules.compare_delivery(delivered, stored, mode)
    assert result.fate.tolist() == [
        "unchanged",
        "revised",
        "new",
        "excluded",
        "rejected",
        "rejected",
    ]
    # stored anew: the new and revised rows, and rejected ones (held back, not released)
    assert result.inserted.tolist() == [False, True, True, False, True, True]
    ends = result.stored_end.tolist()
    # a refusal (consent) retires the stored version; a rejected revision replaces it (held
    # back): an older version is never published in place of the partner's latest word
    assert ends[:4] == ["", "revised", rules.REVISION_EXCLUDED, "revised"]
    # records the delivery does not name: retired by a full delivery, kept by an increment
    assert ends[4:] == [rules.NOT_REDELIVERED if mode == rules.FULL else ""] * 2
    assert result.counts() == {
        "new": 1,
        "revised": 1,
        "unchanged": 1,
        "added": 2,
        "retired": 3 if mode == rules.FULL else 1,
    }


def test_stored_records_harmonized_again_are_kept_held_back_or_retired():
    ends = rules.reharmonized_end(pd.Series([H, R, X]))
    assert ends.tolist() == ["", rules.HELD_BACK, rules.REHARMONIZED_EXCLUDED]


def test_identity_is_the_pseudonym_or_the_content_and_repeats_are_numbered():
    pseudonyms = pd.Series(["p" * 64, None, None, "p" * 64], dtype="string")
    content = pd.Series(["x", "same", "same", "y"], dtype="string")
    keys = identity_keys("tiny", pseudonyms, content, KEY)
    assert keys[0] == "p" * 64  # a record's pseudonym is its identity
    # without one, the keyed hash of its row text (stored keys depend on this staying so)
    expected = hmac.new(KEY, b"record\x1ftiny\x1fsame", hashlib.sha256).hexdigest()
    assert keys[1] == expected
    assert len(set(keys)) == 4  # two identical rows, or two people sharing a pseudonym, differ
    again = identity_keys("tiny", pseudonyms, content, KEY)
    assert keys.tolist() == again.tolist()  # the same delivery, the same identities
    other = identity_keys("ngo", pseudonyms, content, KEY)
    assert other[1] != keys[1]  # per partner
    # Without a pseudonym: the keyed hash of the row's text (only those rows' texts hashed).
    alone = keyed_hash(content[1:2].reset_index(drop=True), KEY, f"record{KEY_SEPARATOR}tiny")
    assert keys[1] == alone[0] and keys[2] != alone[0]
    assert identity_keys("tiny", pseudonyms, content.where(pseudonyms.isna(), "zz"), KEY).equals(
        keys
    )  # a row with a pseudonym: its text is not used


def test_row_text_joins_each_rows_values_as_the_column_by_column_join_did():
    frame = pd.DataFrame(
        {
            "a": pd.Series(["x", None, "", "é\u2028"], dtype="string[pyarrow]"),
            "b": pd.Series([None, None, "2", "y"], dtype="string[python]"),
            "c": pd.Series(["1", "2", "3", None], dtype=object),
        }
    ).set_axis([7, 8, 9, 10])
    separator = "\x1f"
    expected = pd.Series(["x\x1f\x1f1", "\x1f\x1f2", "\x1f2\x1f3", "é\u2028\x1fy\x1f"])
    text = row_text(frame, ["a", "b", "c"])
    assert text.tolist() == expected.tolist() and list(text.index) == [7, 8, 9, 10]
    assert all(separator in t for t in text)
    assert row_text(frame, ["b"]).tolist() == ["", "", "2", "y"]  # one column: itself, filled
    assert row_text(frame, []).tolist() == ["", "", "", ""]


def test_row_text_and_content_keys_keep_their_definition():
    """Stored content keys are compared with every later delivery's: the row text must stay
    the columns' text, missing as empty, joined by the unit separator, and the key the first
    8 bytes (little-endian, signed) of HMAC-SHA-256(key, "content" + separator + text)."""
    frame = pd.DataFrame(
        {
            "a": pd.Series(["Côte d'Ivoire", None, "", "x"], dtype="string"),
            "b": pd.Series([1, None, 3, 4], dtype="Int64"),
            "c": pd.Series(["k", "k", None, "m"], dtype="category"),
            "d": pd.Series(["u", None, "w", None], dtype=object),
        }
    ).set_axis([5, 6, 7, 8])
    text = row_text(frame, ["a", "b", "c", "d"])
    sep = "\x1f"
    expected = [
        f"Côte d'Ivoire{sep}1{sep}k{sep}u",
        f"{sep}{sep}k{sep}",
        f"{sep}3{sep}{sep}w",
        f"x{sep}4{sep}m{sep}",
    ]
    assert text.tolist() == expected and text.index.tolist() == [5, 6, 7, 8]
    keys = content_keys(text, KEY)
    for value, stored in zip(expected, keys, strict=True):
        digest = hmac.digest(KEY, f"content{sep}{value}".encode(), hashlib.sha256)
        assert stored == int.from_bytes(digest[:8], "little", signed=True)
    assert row_text(frame, []).tolist() == ["", "", "", ""]


def test_release_order_is_stable_when_a_record_is_erased():
    keys = identity_keys(
        "tiny",
        pd.Series([None] * 200, dtype="string"),
        pd.Series([str(i) for i in range(200)], dtype="string"),
        KEY,
    )
    order = keys.iloc[release_order("2025", keys)].tolist()
    without = keys.drop(index=17).reset_index(drop=True)
    assert without.iloc[release_order("2025", without)].tolist() == [
        k for k in order if k != keys[17]
    ]
    assert order != keys.iloc[release_order("2026", keys)].tolist()  # per release
    assert order != keys.tolist()  # unrelated to the input order


def test_payloads_round_trip():
    frame = pd.DataFrame(
        {
            "a": pd.Series(["x", 'q "y"', None, "Côte"], dtype="string"),
            "b": pd.Series([None, "1", "2", "\n"], dtype="string"),
        }
    )
    payloads = encode_payloads(frame, ["a", "b"])
    assert payloads[0].as_py() == '["x", null]'  # an array: the names are the delivery's
    back = decode_payloads(payloads, ["a", "b"], ["b", "a", "c"])
    assert (
        back[["a", "b"]].astype(object).fillna("NA").values.tolist()
        == frame.astype(object).fillna("NA").values.tolist()
    )
    assert back["c"].isna().all()  # a field the mapping kept later: missing


# --- three years, as partners deliver them -------------------------------------------------------


def _run(landing: Path, out: Path, release: str, mappings: Path, **extra):
    return run_annual_update(str(landing), str(out), release, mappings=str(mappings), **extra)


@pytest.fixture(scope="module")
def years(tmp_path_factory) -> tuple[Scenario, dict]:
    """The scenario run year after year into one store (the command line's path)."""
    root = tmp_path_factory.mktemp("store")
    scenario = build(root / "scenario")
    out = root / "out"
    runs, made = {}, {}
    for year in scenario.years:
        runs[year] = _run(scenario.landing(year), out, year, scenario.mappings(year))
        made[year] = release_rows(out / year)  # as made (a later withdrawal purges it)
    return scenario, {"out": out, "runs": runs, "made": made}


def test_each_release_equals_a_fresh_build_of_its_effective_deliveries(years, tmp_path):
    scenario, done = years
    for year in scenario.years:
        fresh = tmp_path / f"fresh-{year}"
        _run(scenario.effective(year), fresh, year, scenario.mappings(year))
        assert done["made"][year] == release_rows(fresh / year), year


def test_partners_come_in_by_delivery_mapping_change_or_carry(years):
    scenario, done = years
    y1, y2, y3 = scenario.years
    states = {
        y: {p: e.state for p, e in done["runs"][y].plan.partner_plans.items()}
        for y in scenario.years
    }
    assert states[y1] == dict.fromkeys(
        ["case_management", "ctdc_legacy", "hotline", "iom"], "delivered"
    )
    assert states[y2] == {
        "case_management": "reharmonized",
        "ctdc_legacy": "discontinued",
        "hotline": "delivered",
        "iom": "delivered",
    }
    assert states[y3] == {
        "case_management": "carried",
        "ctdc_legacy": "discontinued",
        "hotline": "discontinued",
        "iom": "delivered",  # a withdrawal only
    }
    plan2 = done["runs"][y2].plan
    assert plan2.partner_plans["hotline"].not_read == {
        "hotline_reports_2025.jsonl": f"already_ingested (release {y1})",
        "withdrawals.csv": f"already_applied (release {y1})",
    }
    assert plan2.partner_plans["case_management"].reharmonize == "mapping changed"


def test_reconciliations_hold_over_time(years):
    scenario, done = years
    y1, y2, y3 = scenario.years
    recons = {
        y: json.loads((done["out"] / y / "reconciliation.json").read_text()) for y in scenario.years
    }
    for recon in recons.values():
        assert recon["invariant_holds"]
        for entry in recon["partners"].values():
            ledger = entry["records"]
            retired = sum(ledger["retired"].values())
            assert (
                ledger["previous"] + ledger["added"] - retired - ledger["erased"]
                == ledger["current"]
            )
            assert ledger["current"] == ledger["released"] + ledger["held_back"] + ledger["merged"]
            for file in (entry["files"] or {}).values():
                assert file["unaccounted"] == 0
    iom, hotline = recons[y2]["partners"]["iom"], recons[y2]["partners"]["hotline"]
    assert iom["records"]["retired"]["not_redelivered"] > 0 and iom["records"]["revised"] > 0
    assert iom["records"]["added"] >= 12
    assert hotline["records"]["retired"] == {} and hotline["records"]["revised"] <= 8
    increment = hotline["files"]["hotline_reports_2026.jsonl"]
    assert increment["revised"] + sum(increment["rejected"].values()) >= 6
    assert recons[y2]["partners"]["case_management"]["records"]["reharmonized"] > 0
    # Carried partners cost nothing and lose nothing.
    assert (
        recons[y3]["partners"]["hotline"]["records"]["current"]
        == recons[y2]["partners"]["hotline"]["records"]["current"]
    )
    assert recons[y3]["partners"]["iom"]["records"]["erased"] == 1


def test_a_withdrawal_erases_the_person_from_the_store_and_every_release(years):
    scenario, done = years
    y1, y2, y3 = scenario.years
    out = done["out"]
    third = done["runs"][y3]
    assert third.committed.records_erased >= 1  # the survivor's versions, history included
    assert sorted(third.committed.releases_to_purge) == [y1, y2]
    assert third.purged.folders_rewritten == 2
    for year in (y1, y2):
        audit = json.loads((out / year / "audit.json").read_text())
        assert audit["entries"][-1]["records_removed"] == 1
    with sqlite3.connect(out / "warehouse.sqlite") as conn:
        per_release = dict(
            conn.execute("SELECT release_label, count(*) FROM ctdc_release_v3 GROUP BY 1")
        )
        counts = dict(conn.execute("SELECT label, row_count FROM data_release"))
        assert per_release == counts
        for year in scenario.years:
            assert per_release[year] == len(pd.read_csv(out / year / "harmonized.csv"))


def test_no_identifier_record_id_or_pseudonym_leaves_the_store(years):
    scenario, done = years
    out = done["out"]
    identifiers = set()
    iom = pd.read_csv(
        next((scenario.landing(scenario.years[1]) / "iom").glob("iom_case_export_*.csv")), dtype=str
    )
    identifiers |= set(iom["case_id"]) | set(iom["beneficiary_last_name"].dropna())
    hotline = pd.read_json(
        next((scenario.landing(scenario.years[0]) / "hotline").glob("*.jsonl")),
        lines=True,
        dtype=str,
    )
    identifiers |= set(hotline["report_id"])
    identifiers = {v for v in identifiers if isinstance(v, str) and len(v) >= 6}
    with sqlite3.connect(out / "warehouse.sqlite") as conn:
        pseudonyms = {
            p
            for (p,) in conn.execute(
                "SELECT pseudonym FROM staged_record WHERE pseudonym IS NOT NULL"
            )
        }
        payloads = " ".join(p for (p,) in conn.execute("SELECT payload FROM staged_record"))
    assert pseudonyms
    released = []
    for path in out.rglob("*"):
        if path.is_file() and path.suffix != ".sqlite":
            released.append(path.read_bytes().decode("utf-8", errors="replace"))
    text = "\n".join(released)
    assert not [v for v in identifiers if v in text]
    assert not [p for p in pseudonyms if p in text]
    assert not [v for v in identifiers if v in payloads]  # the staged store is de-identified


def test_an_earlier_release_is_rebuilt_byte_for_byte(years, tmp_path, capsys):
    scenario, done = years
    for year in scenario.years:
        code = cli.main(
            [
                "rebuild",
                "--out",
                str(done["out"]),
                "--release",
                year,
                "--into",
                str(tmp_path / year),
            ]
        )
        printed = capsys.readouterr().out
        assert code == 0 and "DIFFERS" not in printed and printed.count("identical to") == 2


def test_a_snapshot_is_written_only_for_a_partner_the_release_changed(years):
    """A partner carried, or whose held-back records were harmonized again and held back
    again, keeps its earlier snapshot: the store writes one where records changed."""
    scenario, done = years
    with sqlite3.connect(done["out"] / "warehouse.sqlite") as conn:
        snapshots = conn.execute("SELECT entity_id, sequence FROM partner_snapshot").fetchall()
        changed = set(
            conn.execute(
                "SELECT entity_id, valid_from FROM staged_record UNION "
                "SELECT entity_id, valid_to FROM staged_record WHERE valid_to IS NOT NULL UNION "
                "SELECT entity_id, valid_from FROM case_record UNION "
                "SELECT entity_id, valid_to FROM case_record WHERE valid_to IS NOT NULL UNION "
                "SELECT d.entity_id, r.sequence FROM delivery d "
                "JOIN data_release r ON r.label = d.release_label"
            ).fetchall()
        )
    assert snapshots and set(snapshots) <= changed


def test_history_lists_deliveries_and_releases(years, capsys):
    scenario, done = years
    assert cli.main(["history", "--out", str(done["out"])]) == 0
    printed = capsys.readouterr().out
    assert "incremental" in printed and "full" in printed
    for year in scenario.years:
        assert year in printed


def test_a_rerun_of_the_latest_release_replaces_it_and_is_idempotent(years, tmp_path):
    scenario, done = years
    y3 = scenario.years[-1]
    out = tmp_path / "out"
    shutil.copytree(done["out"], out, ignore=shutil.ignore_patterns(".work", ".locks"))
    before = (out / y3 / "harmonized.csv").read_bytes()
    again = _run(scenario.landing(y3), out, y3, scenario.mappings(y3))
    assert again.plan.replaces == y3 and again.committed.sequence == 3
    assert (out / y3 / "harmonized.csv").read_bytes() == before
    with pytest.raises(CtdcError, match="is not the latest release"):
        _run(scenario.landing(y3), out, scenario.years[0], scenario.mappings(y3))


# --- guards --------------------------------------------------------------------------------------


def test_a_full_delivery_retiring_half_a_partner_fails_unless_accepted(tmp_path):
    import csv

    from ctdc_harmonizer import samples

    landing, out = tmp_path / "landing", tmp_path / "out"
    samples.generate("iom", landing, 60, 3)
    first = run_annual_update(str(landing), str(out), "2024", partners=["iom"])
    stored = first.committed.versions_inserted
    path = next((landing / "iom").glob("iom_case_export_*.csv"))
    rows = list(csv.DictReader(path.open(encoding="utf-8", newline="")))
    (landing / "iom" / "withdrawals.csv").unlink()
    with path.open("w", encoding="utf-8", newline="") as f:  # half the dataset: a partial extract
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), quoting=csv.QUOTE_ALL)
        writer.writeheader()
        writer.writerows(rows[: len(rows) // 2])
    with pytest.raises(CtdcError) as refused:
        run_annual_update(str(landing), str(out), "2025", partners=["iom"])
    message = str(refused.value)
    assert "partner 'iom': this full delivery would retire" in message
    assert "accept_retirements" in message and "--accept-retirements iom" in message
    assert not (out / "2025").exists()
    accepted = run_annual_update(
        str(landing), str(out), "2025", partners=["iom"], accept_retirements=["iom"]
    )
    recon = json.loads((out / "2025" / "reconciliation.json").read_text())
    retired = recon["partners"]["iom"]["records"]["retired"]["not_redelivered"]
    assert retired >= stored // 2 - 3 and accepted.folder.rows == stored - retired


def test_a_partner_not_delivered_for_long_is_flagged(tmp_path, caplog):
    from ctdc_harmonizer import samples

    landing, out = tmp_path / "landing", tmp_path / "out"
    samples.generate_all(landing, 30, 4, ["iom", "case_management"])
    run_annual_update(str(landing), str(out), "2021")
    for year, extra in (("2022", 1), ("2023", 2), ("2024", 3)):
        samples.generate("iom", tmp_path / f"iom-{year}", 30 + extra, 4)
        shutil.rmtree(landing / "iom")
        shutil.copytree(tmp_path / f"iom-{year}" / "iom", landing / "iom")
        (landing / "iom" / "withdrawals.csv").unlink()
        caplog.clear()
        done = run_annual_update(str(landing), str(out), year, accept_retirements=["iom"])
    htcds = done.plan.partner_plans["case_management"]
    assert htcds.state == "carried" and htcds.releases_without_delivery == 3 and htcds.flagged
    assert "no delivery for 3 release(s)" in done.summary.body
    # Said once, though the plan reads the store twice (before its lease and under it).
    flagged = "partner case_management has not delivered for 3 release(s)"
    assert [r.getMessage() for r in caplog.records].count(f"{flagged} (last: 2021)") == 1


# --- a warehouse from before the store -----------------------------------------------------------


def test_a_warehouse_made_before_the_store_upgrades_and_carries_on(tmp_path):
    """A warehouse that main wrote before the store (two releases: four partners, then IOM and
    the hotline): its releases stay readable, and the next run carries every partner."""
    from ctdc_harmonizer import samples

    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(FIXTURE, out / "warehouse.sqlite")
    with sqlite3.connect(out / "warehouse.sqlite") as conn:
        before = dict(conn.execute("SELECT release_label, count(*) FROM case_record GROUP BY 1"))
    samples.generate("hotline", tmp_path / "landing", 20, 9)  # an increment: retires nothing
    done = run_annual_update(str(tmp_path / "landing"), str(out), "2026")
    with sqlite3.connect(out / "warehouse.sqlite") as conn:
        held = dict(conn.execute("SELECT release_label, count(*) FROM ctdc_release_v3 GROUP BY 1"))
    assert {k: held[k] for k in before} == before  # the old releases, as they were
    states = {p: e.state for p, e in done.plan.partner_plans.items()}
    assert states["hotline"] == "delivered" and states["iom"] == "carried"
    # every partner carried with its rows from the last release that held it
    recon = json.loads((out / "2026" / "reconciliation.json").read_text())
    assert recon["invariant_holds"]
    assert recon["partners"]["case_management"]["records"]["previous"] > 0
    assert held["2026"] == done.folder.rows


# --- a whole history harmonized again ------------------------------------------------------------


def test_a_history_larger_than_the_bound_variable_limit_is_harmonized_again(tmp_path, monkeypatch):
    """Re-harmonizing a partner's history reads its staged rows back in one scan: SQLite refuses
    a statement binding more variables than its limit (32,766 by default; 100 here, through the
    SQLAlchemy path, on a history of 300 records)."""
    from ctdc_harmonizer import samples
    from ctdc_harmonizer.samples import next_year
    from ctdc_harmonizer.warehouse import connection

    pragmas = connection._sqlite_pragmas

    def limited(dbapi_conn, record):
        pragmas(dbapi_conn, record)
        dbapi_conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 100)

    monkeypatch.setattr(connection, "_adbc_available", lambda: False)
    monkeypatch.setattr(connection, "_sqlite_pragmas", limited)
    landing, out = tmp_path / "landing", tmp_path / "out"
    mappings = next_year.copy_mappings(REPO_MAPPINGS, tmp_path / "m")
    samples.generate("case_management", landing, 300, 5)
    first = _run(landing, out, "2024", mappings, partners=["case_management"])
    shutil.rmtree(landing / "case_management")  # carried, its mapping corrected
    next_year.correct_mapping(mappings)
    again = _run(landing, out, "2025", mappings)
    entry = again.plan.partner_plans["case_management"]
    assert entry.state == "reharmonized" and entry.reharmonize
    assert again.folder.rows == first.folder.rows > 100


def test_a_store_at_0005_upgrades_its_payloads_in_place(tmp_path):
    """Migration 0006: payloads written as JSON objects (0005) become arrays in their
    delivery's field order, and a history harmonized again from them gives the release a fresh
    build gives (the store at 0005 is made by the downgrade, which writes the objects back)."""
    from alembic import command

    from ctdc_harmonizer import samples
    from ctdc_harmonizer.mapping.partner import load_partner
    from ctdc_harmonizer.samples import next_year
    from ctdc_harmonizer.store.payload import stored_fields
    from ctdc_harmonizer.warehouse.schema import alembic_config

    landing, out = tmp_path / "landing", tmp_path / "out"
    mappings = next_year.copy_mappings(REPO_MAPPINGS, tmp_path / "m")
    samples.generate("hotline", landing, 80, 3)
    (landing / "hotline" / "withdrawals.csv").unlink()
    _run(landing, out, "2024", mappings, partners=["hotline"])
    database = out / "warehouse.sqlite"
    url = f"sqlite:///{database}"
    command.downgrade(alembic_config(url), "0005")
    fields = stored_fields(load_partner(mappings / "hotline"))
    with sqlite3.connect(database) as conn:
        old = [json.loads(p) for (p,) in conn.execute("SELECT payload FROM staged_record")]
        assert "payload_fields" not in {r[1] for r in conn.execute("PRAGMA table_info(delivery)")}
    assert len(old) == 80 and all(list(p) == fields for p in old)  # as 0005 wrote them

    command.upgrade(alembic_config(url), "head")
    with sqlite3.connect(database) as conn:
        (order,) = conn.execute("SELECT payload_fields FROM delivery").fetchone()
        new = [json.loads(p) for (p,) in conn.execute("SELECT payload FROM staged_record")]
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert json.loads(order) == fields
    assert [dict(zip(fields, p, strict=True)) for p in new] == old
    assert not {"ix_staged_record_pseudonym", "ix_case_record_identity_key"} & indexes

    values = mappings / "hotline" / "values.csv"  # a corrected row: the history harmonized again
    row = "victim_gender,Transgender Male,gender,Trans/Transgender/NonConforming,narrower,"
    values.write_text(
        values.read_text(encoding="utf-8").replace(
            row, "victim_gender,Transgender Male,gender,Man,broader,"
        ),
        encoding="utf-8",
    )
    again = _run(landing, out, "2025", mappings, partners=["hotline"])
    assert again.plan.partner_plans["hotline"].state == "reharmonized"
    _run(landing, tmp_path / "fresh", "2025", mappings, partners=["hotline"])
    assert release_rows(out / "2025") == release_rows(tmp_path / "fresh" / "2025")


def test_a_release_reads_a_carried_partner_as_its_stored_records_are(years, tmp_path):
    """What assemble_release reads of a carried partner (its snapshot's release columns, the
    coded ones as categories) equals its current records made categorical, from a snapshot
    and from the tables alike."""
    import numpy as np

    from ctdc_harmonizer.codebook import default_codebook
    from ctdc_harmonizer.columns import FILE, HELD_BACK, IDENTITY
    from ctdc_harmonizer.privacy.linkage import LINK_COLUMNS
    from ctdc_harmonizer.store.identity import hex_words
    from ctdc_harmonizer.store.records import current_records, release_records
    from ctdc_harmonizer.warehouse.connection import warehouse

    scenario, done = years
    codebook = default_codebook()
    keep = [IDENTITY, FILE, *LINK_COLUMNS, *codebook.columns]
    coded = [v.name for v in codebook.variables if v.type != "year"]
    copy = tmp_path / "without-snapshots.sqlite"
    shutil.copy(done["out"] / "warehouse.sqlite", copy)
    with sqlite3.connect(copy) as conn:
        conn.execute("DELETE FROM partner_snapshot")
    base = len(scenario.years)
    for path in (done["out"] / "warehouse.sqlite", copy):
        with warehouse(f"sqlite:///{path}", "reading the store") as db:
            for partner in ["case_management", "ctdc_legacy", "hotline", "iom"]:
                read = release_records(db, partner, base, keep, codebook)
                expected = current_records(db, partner, base, codebook)[[HELD_BACK, *keep]]
                expected = expected.astype(dict.fromkeys(coded, "category"))
                assert len(read) and read.equals(expected), (path.name, partner)
                for name in coded:
                    assert list(read[name].cat.categories) == list(expected[name].cat.categories)
                words = hex_words(read[IDENTITY])
                assert words[:, 0].tolist() == [int(k[:16], 16) for k in read[IDENTITY]]
                assert words[:, 1].tolist() == [int(k[16:32], 16) for k in read[IDENTITY]]
                assert words.dtype == np.uint64
