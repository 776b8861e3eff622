"""Privacy across releases: keyed pseudonyms, the withdrawal registry, cross-partner overlaps.

Planted identifiers (names, dates of birth, case ids) and the pseudonyms themselves must
never appear in a release file, a report, a log line or stdout/stderr.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from ctdc_harmonizer import cli
from ctdc_harmonizer.errors import CtdcError
from ctdc_harmonizer.mapping.spec import FieldSpec
from ctdc_harmonizer.pipeline.local import run_annual_update
from ctdc_harmonizer.privacy import keys, linkage, pseudonyms
from ctdc_harmonizer.run import plan as planning
from ctdc_harmonizer.samples.people import twin_records
from support.databases import postgres_schema
from support.tiny_partner import FIELDS_CSV, PARTNER_YAML, VALUES_CSV, row

PLANTED_ID = "CASE-PLANTED-4411"
PLANTED_NAME = "Zorana Plantedova"
PLANTED_BORN = "1987-05-09"
PLANTED = [PLANTED_ID, "Zorana", "Plantedova", PLANTED_BORN, "09/05/1987"]
LINKAGE_YAML = "linkage:\n  names: [full_name]\n  birthdate: born_on\n"
# A second partner without a case id: pseudonyms and withdrawals by name + birthdate.
NGO_YAML = (
    PARTNER_YAML.replace("partner: tiny", "partner: ngo").replace(
        "record_id: case_id\n", "withdrawals:\n  match_on: [full_name, born_on]\n"
    )
    + LINKAGE_YAML
)


def _mappings(root: Path, policy: str = "report") -> Path:
    for code, yaml_text in (("tiny", PARTNER_YAML + LINKAGE_YAML), ("ngo", NGO_YAML)):
        folder = root / "mappings" / code
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "partner.yaml").write_text(yaml_text, encoding="utf-8")
        (folder / "fields.csv").write_text(FIELDS_CSV, encoding="utf-8")
        (folder / "values.csv").write_text(VALUES_CSV, encoding="utf-8")
    (root / "mappings" / "linkage.yaml").write_text(f"policy: {policy}\n", encoding="utf-8")
    return root / "mappings"


def _others(prefix: str, n: int = 6) -> list[dict]:
    return [
        row(
            case_id=f"{prefix}-{i}",
            full_name=f"Person {prefix} {i}",
            born_on=f"19{70 + i}-01-0{i + 1}",
            gender="F",
            nationality="Serbia",
        )
        for i in range(n)
    ]


def _land(root: Path, partner: str, rows: list[dict], withdrawals: str | None = None) -> Path:
    from support.tiny_partner import COLUMNS

    folder = root / "landing" / partner
    if folder.exists():
        for f in folder.iterdir():
            f.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=COLUMNS).to_csv(folder / "extract.csv", index=False)
    if withdrawals is not None:
        (folder / "withdrawals.csv").write_text(withdrawals, encoding="utf-8")
    return root / "landing"


def _run(root: Path, release: str, mappings: Path, partners=("tiny",)) -> dict:
    return run_annual_update(
        str(root / "landing"), str(root / "out"), release, list(partners), str(mappings), workers=1
    )


def _planted_person(**extra: str) -> dict:
    values = {
        "case_id": PLANTED_ID,
        "full_name": PLANTED_NAME,
        "born_on": PLANTED_BORN,
        "gender": "F",
        "nationality": "Serbia",
    }
    return row(**{**values, **extra})


def _released_text(out: Path) -> str:
    """Every file under the out folder except the warehouse (which holds pseudonyms)."""
    parts = []
    for path in sorted(out.rglob("*")):
        if path.is_file() and path.suffix != ".sqlite":
            parts.append(path.read_bytes().decode("utf-8", errors="replace"))
    return "\n".join(parts)


def _stored_pseudonyms(out: Path) -> list[str]:
    with sqlite3.connect(out / "warehouse.sqlite") as conn:
        return [
            r[0]
            for table in ("case_record", "staged_record")
            for r in conn.execute(f"SELECT pseudonym FROM {table}")
            if r[0]
        ]


def _per_release(conn) -> dict[str, int]:
    """Records each release holds, through the release view."""
    return dict(conn.execute("SELECT release_label, count(*) FROM ctdc_release_v3 GROUP BY 1"))


# --- the key ------------------------------------------------------------------------------------


def test_a_run_without_a_key_refuses_to_start(tmp_path, monkeypatch, capsys):
    mappings = _mappings(tmp_path)
    _land(tmp_path, "tiny", _others("A"))
    monkeypatch.delenv(keys.KEY_ENV)
    with pytest.raises(CtdcError, match="no pseudonym key"):
        planning.plan_release(
            str(tmp_path / "landing"), str(tmp_path / "out"), "r1", ["tiny"], str(mappings)
        )
    code = cli.main(
        [
            "run",
            "--landing",
            str(tmp_path / "landing"),
            "--out",
            str(tmp_path / "out"),
            "--release",
            "r1",
            "--mappings",
            str(mappings),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "ctdc: error:" in err and "CTDC_PSEUDONYM_KEY" in err
    assert "Traceback" not in err


def test_a_short_key_is_refused_without_showing_it(monkeypatch):
    monkeypatch.setenv(keys.KEY_ENV, "short-secret")
    with pytest.raises(CtdcError) as caught:
        keys.pseudonym_key()
    assert "short-secret" not in str(caught.value)


def test_the_dag_reads_the_key_from_the_airflow_variable(monkeypatch):
    monkeypatch.delenv(keys.KEY_ENV)
    monkeypatch.setenv("AIRFLOW_VAR_CTDC_PSEUDONYM_KEY", "v" * 40)  # how a secrets backend
    assert keys.pseudonym_key() == b"v" * 40  # or the env backend serves Variables


def test_pseudonyms_depend_on_key_and_partner_and_are_stable():
    ids = pd.Series(["A-1", "A-2", "A-1", None], dtype="string")
    one = pseudonyms.pseudonymize("iom", "id", ids, b"x" * 32)
    assert one[0] == one[2] and one[0] != one[1] and pd.isna(one[3])
    assert len(one[0]) == 64 and "A-1" not in one[0]
    assert one[0] != pseudonyms.pseudonymize("iom", "id", ids, b"y" * 32)[0]
    assert one[0] != pseudonyms.pseudonymize("hotline", "id", ids, b"x" * 32)[0]


@pytest.mark.parametrize("size", [16, 32, 63, 64, 65, 100])
def test_keyed_hashes_are_the_hmac_of_domain_and_value(size):
    # _digests computes HMAC-SHA-256 from copied keyed states: the same bytes as the hmac
    # module, for keys shorter than, equal to and longer than SHA-256's 64-byte block.
    key = bytes(range(7, 7 + size))
    values = pd.Series(["A-1", "", "Zoë Núñez\x1f1990", "A-1", None, "x" * 200], dtype="string")
    sep = pseudonyms.KEY_SEPARATOR

    def expected(value: str) -> bytes:
        return hmac.digest(key, f"dom{sep}{value}".encode(), hashlib.sha256)

    hexes = pseudonyms.keyed_hash(values, key, "dom")
    words = pseudonyms.keyed_hash64(values, key, "dom")
    for i, value in enumerate(values):
        if value is pd.NA:
            assert pd.isna(hexes[i]) and pd.isna(words[i])
            continue
        assert hexes[i] == expected(value).hex()
        assert int(words[i]) == int.from_bytes(expected(value)[:8], "little")


# --- the withdrawal registry --------------------------------------------------------------------


def test_a_withdrawal_lasts_across_releases_and_purges_earlier_ones(tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    mappings = _mappings(tmp_path)
    out = tmp_path / "out"
    delivery = [_planted_person(), *_others("A")]

    _land(tmp_path, "tiny", delivery)
    first = _run(tmp_path, "r1", mappings)
    assert first.folder.rows == 7
    before = pd.read_parquet(out / "r1" / "harmonized.parquet")

    # r2: the partner delivers the withdrawal (its extract, unchanged, is not read again):
    # the person is erased from the store, history included, and from the r1 folder.
    _land(tmp_path, "tiny", delivery, withdrawals=f"record_id\n{PLANTED_ID}\n")
    second = _run(tmp_path, "r2", mappings)
    assert second.plan.partner_plans["tiny"].not_read == {
        "extract.csv": "already_ingested (release r1)"
    }
    assert second.folder.rows == 6 and second.folder.totals["records_erased"] == 1
    assert second.committed.withdrawals_recorded == 1 and second.committed.records_erased == 1
    assert second.purged.records_purged == 1 and second.purged.folders_rewritten == 1
    # The earlier release, in the store and in its folder, no longer holds the person.
    after = pd.read_parquet(out / "r1" / "harmonized.parquet")
    assert len(after) == len(before) - 1
    assert len(pd.read_csv(out / "r1" / "harmonized.csv")) == 6
    audit = json.loads((out / "r1" / "audit.json").read_text())
    assert audit["entries"][0]["records_removed"] == 1
    with sqlite3.connect(out / "warehouse.sqlite") as conn:
        assert _per_release(conn) == {"r1": 6, "r2": 6}
        registry = conn.execute("SELECT * FROM withdrawal_registry").fetchall()
        assert len(registry) == 1 and registry[0][1] == "tiny"
        assert PLANTED_ID not in repr(registry)
        r1_rows = conn.execute("SELECT row_count FROM data_release WHERE label='r1'").fetchone()
        assert r1_rows[0] == 6
        assert conn.execute("SELECT count(*) FROM pending_purge").fetchone()[0] == 0
    assert any(s["state"] == "consistent" for s in _states(out).values())

    # r3: the partner forgets and delivers the record again (with one more case), without a
    # withdrawals file: the registry erases it as it is read.
    _land(tmp_path, "tiny", [*delivery, *_others("B", 1)])
    third = _run(tmp_path, "r3", mappings)
    assert third.folder.rows == 7 and third.folder.totals["erased"] == 1
    recon = json.loads((out / "r3" / "reconciliation.json").read_text())
    assert recon["invariant_holds"] and recon["partners"]["tiny"]["totals"]["erased"] == 1
    assert third.committed.withdrawals_recorded == 0

    # r4: a withdrawal line naming someone no longer delivered but registered is honoured.
    _land(tmp_path, "tiny", _others("A"), withdrawals=f"record_id\n{PLANTED_ID}\n \n")
    assert _run(tmp_path, "r4", mappings).folder.rows == 6

    # Nothing identifying, and no pseudonym, in any file, log line or console output.
    text = _released_text(out) + caplog.text + "".join(capsys.readouterr())
    for value in PLANTED:
        assert value not in text
    stored = _stored_pseudonyms(out)
    assert stored and not any(p in text for p in stored)


def _states(out: Path) -> dict:
    from ctdc_harmonizer.release.consistency import release_states

    return release_states(out)


def test_a_withdrawal_matching_nothing_anywhere_is_still_an_error(tmp_path):
    mappings = _mappings(tmp_path)
    _land(tmp_path, "tiny", _others("A"), withdrawals="record_id\nCASE-NOBODY-1\n")
    with pytest.raises(CtdcError, match="matches no delivered record, no stored release"):
        _run(tmp_path, "r1", mappings)


def test_a_withdrawal_by_identifying_fields_is_registered_too(tmp_path):
    mappings = _mappings(tmp_path)
    person = _planted_person()
    _land(tmp_path, "ngo", [person, *_others("N")])
    _run(tmp_path, "r1", mappings, partners=("ngo",))
    # Requested with other spelling and case: the normaliser makes them one person.
    _land(
        tmp_path,
        "ngo",
        [person, *_others("N")],
        withdrawals=f"full_name,born_on\n  zorana PLANTEDOVA ,{PLANTED_BORN}\n",
    )
    assert _run(tmp_path, "r2", mappings, partners=("ngo",)).folder.rows == 6
    _land(tmp_path, "ngo", [person, *_others("N"), *_others("M", 1)])
    third = _run(tmp_path, "r3", mappings, partners=("ngo",))
    assert third.folder.rows == 7 and third.folder.totals["erased"] == 1
    assert len(pd.read_parquet(tmp_path / "out" / "r1" / "harmonized.parquet")) == 6


# --- cross-partner overlaps -------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["report", "merge"])
def test_the_same_person_at_two_partners_is_one_overlap(tmp_path, policy):
    mappings = _mappings(tmp_path, policy)
    _land(tmp_path, "tiny", [_planted_person(), *_others("A")])
    # The NGO spells the name with an accent and swaps day and month of the birthdate.
    twin = _planted_person(full_name="Zorana Plantedovà", born_on="1987-09-05")
    _land(tmp_path, "ngo", [twin, *_others("N")])
    info = _run(tmp_path, "r1", mappings, partners=("tiny", "ngo"))
    recon = json.loads((tmp_path / "out" / "r1" / "reconciliation.json").read_text())
    assert recon["overlaps"]["persons_at_both_partners"] == {"ngo|tiny": 1}
    assert recon["invariant_holds"]
    matrix = json.loads((tmp_path / "out" / "r1" / "overlaps.json").read_text())
    assert matrix["pairs"] == {"ngo|tiny": None}  # 1 < 5: hidden in the shareable report
    merged = 1 if policy == "merge" else 0
    assert info.folder.rows == 14 - merged
    assert recon["records"]["merged"] == merged  # release-level: kept in the store, not released
    text = _released_text(tmp_path / "out")
    assert not any(value in text for value in [*PLANTED, "Plantedovà", "1987-09-05"])


def test_linkage_precision_and_recall_on_generated_typos():
    a, b = twin_records(3000, seed=3)

    class Spec:
        linkage_names = ("first", "last")
        linkage_birthdate = "born"

        def field(self, name):
            return FieldSpec(name=name, role="date", delimiter="", format="", required=False)

    key = b"k" * 32
    both = pd.concat(
        [
            linkage.linkage_keys(Spec(), a, key).assign(side="a", person=a["person"].to_numpy()),
            linkage.linkage_keys(Spec(), b, key).assign(side="b", person=b["person"].to_numpy()),
        ],
        ignore_index=True,
    )
    found = pd.DataFrame(
        {"c": linkage.clusters(both), "side": both["side"], "person": both["person"]}
    )
    pairs = found[found.side == "a"].merge(found[found.side == "b"], on="c")
    true = int((pairs.person_x == pairs.person_y).sum())
    precision, recall = true / len(pairs), true / len(a)
    assert precision >= 0.99 and recall >= 0.85, (precision, recall)
    # The typos the keys are built for are all found.
    hit = set(pairs.loc[pairs.person_x == pairs.person_y, "person_x"])
    easy = b[
        b.typo.isin(
            [
                "none",
                "accent",
                "vowel",
                "case_spacing",
                "name_order",
                "day_month",
                "double_consonant",
                "vowel_and_day_month",
            ]
        )
    ]
    assert easy.person.isin(hit).all()


def test_soundex():
    assert [linkage.soundex(t) for t in ["robert", "rupert", "ashcraft", "tymczak", "pfister"]] == [
        "r163",
        "r163",
        "a261",
        "t522",
        "p236",
    ]


@pytest.fixture
def pg_url() -> Iterator[str]:
    with postgres_schema("ctdc_privacy") as url:
        yield url


@pytest.mark.postgres
def test_the_registry_on_postgresql(tmp_path, pg_url):
    import sqlalchemy as sa

    mappings = _mappings(tmp_path)
    delivery = [_planted_person(), *_others("A")]

    def run(release: str):
        return run_annual_update(
            str(tmp_path / "landing"),
            str(tmp_path / "out"),
            release,
            ["tiny"],
            str(mappings),
            warehouse_url=pg_url,
            workers=1,
        )

    _land(tmp_path, "tiny", delivery)
    run("r1")
    _land(tmp_path, "tiny", delivery, withdrawals=f"record_id\n{PLANTED_ID}\n")
    assert run("r2").purged.records_purged == 1
    _land(tmp_path, "tiny", [*delivery, *_others("B", 1)])
    assert run("r3").folder.totals["erased"] == 1
    assert len(pd.read_parquet(tmp_path / "out" / "r1" / "harmonized.parquet")) == 6
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        per_release = dict(
            conn.execute(
                sa.text("SELECT release_label, count(*) FROM ctdc_release_v3 GROUP BY 1")
            ).all()
        )
        assert per_release == {"r1": 6, "r2": 6, "r3": 7}
        assert conn.execute(sa.text("SELECT count(*) FROM privacy_audit")).scalar() == 1
    engine.dispose()


def test_a_folder_that_disagrees_with_the_warehouse_is_not_rewritten_on_a_guess(tmp_path):
    mappings = _mappings(tmp_path)
    delivery = [_planted_person(), *_others("A")]
    _land(tmp_path, "tiny", delivery)
    _run(tmp_path, "r1", mappings)
    folder = tmp_path / "out" / "r1"
    table = pd.read_parquet(folder / "harmonized.parquet")
    table.iloc[1:].to_parquet(folder / "harmonized.parquet", index=False)  # edited by hand
    _land(tmp_path, "tiny", delivery, withdrawals=f"record_id\n{PLANTED_ID}\n")
    with pytest.raises(CtdcError, match="they disagree"):
        _run(tmp_path, "r2", mappings)
    assert len(pd.read_parquet(folder / "harmonized.parquet")) == 6  # untouched
    assert not (folder / "audit.json").exists()
    with sqlite3.connect(tmp_path / "out" / "warehouse.sqlite") as conn:  # nothing committed
        assert _per_release(conn) == {"r1": 7}
        assert conn.execute("SELECT count(*) FROM withdrawal_registry").fetchone()[0] == 0
