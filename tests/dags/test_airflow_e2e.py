"""The annual-update DAG end to end in Airflow: once with dag.test(), once with `airflow dags
test`, each into its own out folder (a store each), and `ctdc run` beside dag.test() to show
the two runners of the one declaration make the same release.

Then the privacy check: no identifier from the sample extracts (names, phones, e-mails,
addresses, case ids, notes, dates of birth) may be found in the release folder, the
warehouse, the task logs, XCom or anywhere in the Airflow metadata database.
Three DAG runs for the whole module (the first task of a run costs ~10 s): two that succeed
and one where a partner delivers a broken file. Keep it at that.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from support.harness import release_files

pytestmark = pytest.mark.airflow

DAG_ID = "ctdc_annual_update"
RELEASE = "test-2025"
CLI_RELEASE = "cli-2025"
ASSET_URI = "ctdc://harmonized-release/"  # normalized by Airflow
MIN_LENGTH = 6  # shorter identifier values (initials, "Ms.") could match by chance
WORD = re.compile(r"\w+")
# In-process runs have no one to answer the human approval: it is marked approved. The real
# approval (REST API, real processes) is tested in test_airflow_processes.py.
APPROVED = {"mark_success_pattern": "approve"}


@dataclass
class Run:
    state: str
    run_id: str
    out: Path
    output: str  # what the run printed (logs), "" when pytest capture is off


@pytest.fixture(scope="module")
def metadata_db(airflow_home: Path) -> Path:
    """`airflow db migrate` on the isolated AIRFLOW_HOME (see conftest.py)."""
    from airflow.utils import db

    db.upgradedb()
    return airflow_home / "airflow.db"


@pytest.fixture(scope="module")
def partners(sample_landing: Path) -> list[str]:
    """Partners with both a sample generator and a mapping folder (others are being added)."""
    from ctdc_harmonizer import samples
    from ctdc_harmonizer.mapping.partner import available_partners

    chosen = sorted(set(samples.available()) & set(available_partners()))
    assert chosen, "no partner has both a sample generator and a mapping folder"
    return chosen


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("releases")


@pytest.fixture(scope="module")
def cli_out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli_releases")


def conf(landing: Path, out: Path, release: str, partners: list[str]) -> dict:
    return {"landing": str(landing), "out": str(out), "release": release, "partners": partners}


@pytest.fixture(scope="module")
def dag_run(request, repo_root, metadata_db, sample_landing, out_dir, partners) -> Run:
    """One in-process run with dag.test(); its log output is taken from pytest's capture."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(repo_root / "dags"))
    assert not bag.import_errors
    dag = bag.dags[DAG_ID]
    for task in dag.tasks:
        task.retries = 0  # fail at once instead of waiting for the retry delay
    capman = request.config.pluginmanager.getplugin("capturemanager")
    capturing = capman is not None and capman.is_globally_capturing()
    if capturing:
        capman.read_global_capture()  # start from an empty buffer
    run = dag.test(run_conf=conf(sample_landing, out_dir, RELEASE, partners), **APPROVED)
    output = "".join(capman.read_global_capture()) if capturing else ""
    return Run(str(getattr(run.state, "value", run.state)), run.run_id, out_dir, output)


@pytest.fixture(scope="module")
def cli_run(dag_run, sample_landing, cli_out_dir, partners) -> Run:
    """One run through `airflow dags test` in a subprocess (after the in-process run)."""
    airflow = Path(sys.executable).with_name("airflow")
    command = [str(airflow), "dags", "test", DAG_ID, "--mark-success-pattern", "approve", "-c"]
    command.append(json.dumps(conf(sample_landing, cli_out_dir, CLI_RELEASE, partners)))
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=os.environ)
    state = "success" if done.returncode == 0 else f"failed (exit {done.returncode})"
    return Run(state, "", cli_out_dir, done.stdout + done.stderr)


def test_ctdc_run_and_the_dag_make_the_same_release_byte_for_byte(
    dag_run, sample_landing, partners, tmp_path
):
    from ctdc_harmonizer.pipeline.local import run_annual_update

    run_annual_update(str(sample_landing), str(tmp_path / "out"), RELEASE, partners)
    from_cli = release_files(tmp_path / "out" / RELEASE)
    from_dag = release_files(dag_run.out / RELEASE)
    assert len(from_cli) > 8 and "harmonized.parquet" in from_cli
    assert from_cli == from_dag
    handoff = [release_files(out / "handoff" / RELEASE) for out in (tmp_path / "out", dag_run.out)]
    assert handoff[0] == handoff[1]


# --- the runs ------------------------------------------------------------------------------


def task_states(db: Path, run_id: str) -> dict[tuple[str, int], str]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT task_id, map_index, state FROM task_instance WHERE dag_id = ? AND run_id = ?",
            (DAG_ID, run_id),
        ).fetchall()
    return {(task, index): state for task, index, state in rows}


def map_names(db: Path, run_id: str) -> set[str | None]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT DISTINCT rendered_map_index FROM task_instance "
            "WHERE dag_id = ? AND run_id = ? AND map_index >= 0",
            (DAG_ID, run_id),
        ).fetchall()
    return {name for (name,) in rows}


def test_dag_test_run_succeeds_for_every_partner(dag_run, metadata_db, partners):
    states = task_states(metadata_db, dag_run.run_id)
    failed = sorted(f"{t}[{i}]={s}" for (t, i), s in states.items() if s != "success")
    assert dag_run.state == "success", f"task states: {failed}"
    assert not failed
    # The partner task group is mapped: one instance of each of its tasks per partner.
    mapped = Counter(task for task, index in states if index >= 0)
    steps = (
        "stage_partner",
        "check_staged_contract",
        "harmonize_partner",
        "check_codebook_contract",
        "compare_with_store",
    )
    assert mapped == {f"partner.{step}": len(partners) for step in steps}
    assert map_names(metadata_db, dag_run.run_id) == set(partners)  # not 0..n in the UI


def test_release_folder(dag_run, partners):
    from ctdc_harmonizer.codebook import default_codebook

    release = dag_run.out / RELEASE
    harmonized = pd.read_csv(release / "harmonized.csv", dtype=str, keep_default_na=False)
    columns = default_codebook().columns
    assert len(columns) == 27
    assert list(harmonized.columns) == columns
    assert len(harmonized) > 0
    recon = json.loads((release / "reconciliation.json").read_text(encoding="utf-8"))
    assert recon["invariant_holds"] is True
    assert sorted(recon["partners"]) == partners
    assert recon["totals"]["harmonized"] == len(harmonized) == recon["records"]["released"]
    assert not (dag_run.out / ".work" / RELEASE).exists(), "work folder left behind"


def test_the_dag_writes_each_partner_its_receipt(dag_run, partners):
    from ctdc_harmonizer.release import receipts

    folder = dag_run.out / "receipts" / RELEASE
    assert sorted(p.name for p in folder.iterdir()) == sorted(partners)
    for partner in partners:
        receipt = receipts.read_receipt(folder / partner)
        assert receipt.kind == "run" and receipt.release == RELEASE and receipt.partner == partner
        assert receipt.reconciles and receipt.totals.rows_read > 0


def test_warehouse_holds_the_release(dag_run):
    rows = len(pd.read_csv(dag_run.out / RELEASE / "harmonized.csv", dtype=str))
    with sqlite3.connect(dag_run.out / "warehouse.sqlite") as conn:
        loaded = conn.execute(
            "SELECT count(*) FROM ctdc_release_v3 WHERE release_label = ?", (RELEASE,)
        ).fetchone()[0]
    assert loaded == rows > 0


def test_asset_event_emitted(dag_run, metadata_db):
    with sqlite3.connect(metadata_db) as conn:
        events = conn.execute(
            "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE a.uri = ?",
            (ASSET_URI,),
        ).fetchall()
    extras = [json.loads(extra) for (extra,) in events]
    assert any(extra.get("release") == RELEASE for extra in extras), extras


def test_asset_event_carries_release_rows_and_report(dag_run, metadata_db):
    with sqlite3.connect(metadata_db) as conn:
        (extra,) = conn.execute(
            "SELECT e.extra FROM asset_event e WHERE e.source_run_id = ?", (dag_run.run_id,)
        ).fetchone()
    extra = json.loads(extra)
    rows = len(pd.read_csv(dag_run.out / RELEASE / "harmonized.csv", dtype=str))
    handoff = dag_run.out / "handoff" / RELEASE
    manifest = hashlib.sha256((handoff / "manifest.json").read_bytes()).hexdigest()
    assert extra == {
        "release": RELEASE,
        "rows": rows,
        "report": str(dag_run.out / RELEASE),
        "handoff": str(handoff),
        "manifest_sha256": manifest,
    }


def test_cli_dags_test_succeeds(cli_run):
    assert cli_run.state == "success", cli_run.output[-3000:]
    recon = json.loads((cli_run.out / CLI_RELEASE / "reconciliation.json").read_text("utf-8"))
    assert recon["invariant_holds"] is True
    with sqlite3.connect(cli_run.out / "warehouse.sqlite") as conn:
        labels = {
            row[0] for row in conn.execute("SELECT DISTINCT release_label FROM ctdc_release_v3")
        }
    assert labels == {CLI_RELEASE}


# --- privacy --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def identifiers(sample_landing, partners) -> dict[str, str]:
    """Every identifying value in the sample extracts, casefolded -> 'partner.field'.

    Fields with role identifier, free_text or record_id, withdrawn record ids, dates of
    birth as delivered, and every date as ISO yyyy-mm-dd (only years and ages may leave the
    reader). Values that also occur in a kept (non-identifying) field, such as a country in
    a postal address, are left out.
    """
    from ctdc_harmonizer.ingest.extract import read_extract
    from ctdc_harmonizer.ingest.files import find_extract_files
    from ctdc_harmonizer.ingest.withdrawals import find_withdrawals_file
    from ctdc_harmonizer.mapping.partner import load_partner
    from ctdc_harmonizer.paths import mappings_dir

    found: dict[str, str] = {}
    kept: set[str] = set()

    def add(values: pd.Series, where: str, min_length: int = MIN_LENGTH) -> None:
        text = values.dropna().astype(str).str.strip().str.casefold()
        for value in text[text.str.len() >= min_length].unique():
            found.setdefault(value, where)

    for partner in partners:
        config = load_partner(mappings_dir() / partner)
        sources = [s for derived in config.derive.values() for s in derived]
        birthdates = {s.field for s in sources if s.method == "birthdate"}
        for path in find_extract_files(config, sample_landing):
            frame = read_extract(config, path, all_columns=True).frame
            for spec in config.fields:
                column = frame[spec.name]
                where = f"{partner}.{spec.name}"
                if spec.role in {"identifier", "free_text", "record_id"}:
                    add(column, where)
                elif spec.role == "date":
                    if spec.name in birthdates:
                        add(column, where)
                    fmt = spec.format or "mixed"
                    dates = pd.to_datetime(column.astype("string"), format=fmt, errors="coerce")
                    add(dates.dt.strftime("%Y-%m-%d"), where, min_length=10)
                elif spec.role != "ignored":
                    kept.update(column.dropna().astype(str).str.strip().str.casefold())
        withdrawals = find_withdrawals_file(config, sample_landing)
        if withdrawals:  # record ids, or names and dates of birth
            add(pd.read_csv(withdrawals, dtype=str).stack(), f"{partner}.withdrawals")
    for value in kept & found.keys():
        del found[value]
    assert len(found) > 100, "too few identifier values collected: the check would be vacuous"
    return found


def leaks(identifiers: dict[str, str], text: str) -> list[str]:
    """Fields whose values occur in text (case-insensitive), with counts; values not shown."""
    text = text.casefold()
    words = Counter(WORD.findall(text))
    hits: Counter[str] = Counter()
    for value, where in identifiers.items():
        tokens = WORD.findall(value)
        # Cheap pre-filter: every word of the value must occur in the text at all.
        if tokens and all(words[t] for t in tokens) and value in text:
            hits[where] += 1
    return [f"{where}: {n} value(s)" for where, n in sorted(hits.items())]


def file_text(path: Path) -> str:
    if path.suffix == ".parquet":
        return pd.read_parquet(path).astype(str).to_csv(index=False)
    if path.suffix == ".arrow":  # a work-folder frame (lz4): decoded to be searched
        return pd.read_feather(path).astype(str).to_csv(index=False)
    if path.suffix in {".sqlite", ".db"}:
        return sqlite_text(path)
    return path.read_bytes().decode("utf-8", errors="ignore")


def sqlite_text(path: Path) -> str:
    """Every table dumped as SQL, plus the raw bytes of the file (free pages included)."""
    with sqlite3.connect(path) as conn:
        dump = "\n".join(conn.iterdump())
    return dump + "\n" + path.read_bytes().decode("utf-8", errors="ignore")


def test_no_identifier_in_release_folders(dag_run, cli_run, identifiers):
    files = [p for run in (dag_run, cli_run) for p in run.out.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files)
    assert leaks(identifiers, "\n".join(file_text(p) for p in files)) == []


def test_no_identifier_in_warehouse(cli_run, identifiers):
    assert leaks(identifiers, sqlite_text(cli_run.out / "warehouse.sqlite")) == []


def test_no_identifier_in_task_logs(dag_run, cli_run, airflow_home, identifiers):
    if not dag_run.output:
        pytest.skip("pytest output capture is off (-s): the dag.test() logs were not captured")
    # dag.test() runs tasks in-process: their logs go to stdout, not to files.
    for run in (dag_run, cli_run):
        assert "planned release" in run.output, "pipeline log lines missing from the capture"
        assert "Done. Returned value was" in run.output, "task log lines missing"
    log_files = [p for p in (airflow_home / "logs").rglob("*") if p.is_file()]
    texts = [dag_run.output, cli_run.output, *(file_text(p) for p in log_files)]
    assert leaks(identifiers, "\n".join(texts)) == []


def run_note(db: Path, run_id: str) -> str | None:
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT n.content FROM dag_run_note n JOIN dag_run r ON r.id = n.dag_run_id "
            "WHERE r.dag_id = ? AND r.run_id = ?",
            (DAG_ID, run_id),
        ).fetchone()
    return row[0] if row else None


def test_run_note_carries_per_partner_counts(dag_run, metadata_db, partners):
    """The plugin's listener, called as the scheduler calls it, on the real finished run."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from ctdc_release_report.run_note import run_note_listener
    from sqlalchemy import select

    from ctdc_harmonizer.release import report

    with create_session() as session:
        run = session.scalar(select(DagRun).where(DagRun.run_id == dag_run.run_id))
        run.note = "checked by the data team"  # a person's note is kept, ours follows it
        run_note_listener.on_dag_run_success(dag_run=run, msg="success")
        run_note_listener.on_dag_run_success(dag_run=run, msg="success")  # idempotent
    note = run_note(metadata_db, dag_run.run_id)
    recon = report.reconciliation(dag_run.out / RELEASE)
    table = "\n".join(
        f"| {r.partner} | {int(r.released)} |" for r in recon.sort_values("partner").itertuples()
    )
    assert note.startswith("checked by the data team\n\n**Harmonized rows per partner**")
    assert note.count("**Harmonized rows per partner**") == 1
    assert table in note
    assert f"Total: {int(recon.released.sum())} rows from {len(partners)} partner(s)." in note


def test_run_note_keeps_only_partner_names_and_integers():
    from ctdc_release_report.run_note import note_text

    summary = {"partners": {"iom": 3, "Jane Doe <j@x.org>": 1, "hotline": "7", "ngo": True}}
    assert note_text(summary).splitlines()[4:] == [
        "| iom | 3 |",
        "",
        "Total: 3 rows from 1 partner(s).",
    ]
    assert note_text({"body": "anything"}) is None
    assert note_text(None) is None


def test_no_identifier_in_xcom_or_metadata_db(dag_run, cli_run, metadata_db, identifiers):
    with sqlite3.connect(metadata_db) as conn:
        xcoms = conn.execute(
            "SELECT task_id, value FROM xcom WHERE dag_id = ?", (DAG_ID,)
        ).fetchall()
    assert {"plan_release", "partner.stage_partner", "commit_release"} <= {t for t, _ in xcoms}
    assert leaks(identifiers, "\n".join(str(value) for _, value in xcoms)) == []
    assert leaks(identifiers, sqlite_text(metadata_db)) == []


# --- a partner's bad file ---------------------------------------------------------------------

FAILED_RELEASE = "broken-2025"


@pytest.fixture(scope="module")
def failed_run(request, dag_run, repo_root, sample_landing, tmp_path_factory) -> Run:
    """A run where one partner's file lacks a required column: that partner's read task
    fails with a located, value-free error; the other partners' chains still complete."""
    import shutil

    import openpyxl
    from airflow.dag_processing.dagbag import DagBag

    landing = tmp_path_factory.mktemp("broken_landing")
    for partner in ("case_management", "iom"):
        shutil.copytree(sample_landing / partner, landing / partner)
    workbook_path = next((landing / "case_management").glob("*.xlsx"))
    book = openpyxl.load_workbook(workbook_path)
    book.active.delete_cols(8)  # prs_Gender
    book.save(workbook_path)
    dag = DagBag(dag_folder=str(repo_root / "dags")).dags[DAG_ID]
    for task in dag.tasks:
        task.retries = 0
    capman = request.config.pluginmanager.getplugin("capturemanager")
    capturing = capman is not None and capman.is_globally_capturing()
    if capturing:
        capman.read_global_capture()
    out = tmp_path_factory.mktemp("broken_out")
    run = dag.test(
        run_conf=conf(landing, out, FAILED_RELEASE, ["case_management", "iom"]), **APPROVED
    )
    output = "".join(capman.read_global_capture()) if capturing else ""
    return Run(str(getattr(run.state, "value", run.state)), run.run_id, out, output)


def test_bad_file_fails_its_partner_only_with_a_located_error(failed_run, metadata_db, identifiers):
    assert failed_run.state == "failed"
    states = task_states(metadata_db, failed_run.run_id)
    reads = {i: state for (task, i), state in states.items() if task == "partner.stage_partner"}
    assert sorted(reads.values()) == ["failed", "success"]  # case_management, iom
    compared = [s for (t, _), s in states.items() if t == "partner.compare_with_store"]
    assert "success" in compared  # iom went all the way through its chain
    assert states[("assemble_release", -1)] == "upstream_failed"
    assert not (failed_run.out / FAILED_RELEASE).exists(), "no release from a failed run"
    if not failed_run.output:
        pytest.skip("pytest output capture is off (-s): the run's logs were not captured")
    assert "partner 'case_management', file 'htcds_case_export.xlsx'" in failed_run.output
    assert "column 'prs_Gender': required column is missing" in failed_run.output
    assert leaks(identifiers, failed_run.output) == []


# --- a scheduled run before any delivery ------------------------------------------------------


def test_nothing_delivered_succeeds_at_once_and_skips_the_rest(
    repo_root, metadata_db, tmp_path, monkeypatch
):
    """Default params, an empty landing folder: the run succeeds, everything after
    `partners_with_work` is skipped (no release, no approval request), instead of failing and
    retrying."""
    import time

    from airflow.dag_processing.dagbag import DagBag

    (tmp_path / "landing").mkdir()
    monkeypatch.setenv("CTDC_LANDING", str(tmp_path / "landing"))
    monkeypatch.setenv("CTDC_OUT", str(tmp_path / "out"))
    dag = DagBag(dag_folder=str(repo_root / "dags")).dags[DAG_ID]
    started = time.monotonic()
    run = dag.test()  # no conf: what the yearly schedule does
    assert str(getattr(run.state, "value", run.state)) == "success"
    assert time.monotonic() - started < 60
    states = task_states(metadata_db, run.run_id)
    # No sources file: the wait and the pull end at once, with nothing pulled.
    assert states.pop(("wait_for_deliveries", -1)) == "success"
    assert states.pop(("pull_deliveries", -1)) == "success"
    assert states.pop(("plan_release", -1)) == "success"
    assert states.pop(("partners_with_work", -1)) == "success"
    # The teardown runs whatever happened upstream; with nothing planned it has nothing to do.
    assert states.pop(("finish_run", -1)) in {"success", "skipped"}
    assert set(states.values()) == {"skipped"}, states
    assert not (tmp_path / "out").exists()


def test_no_pseudonym_outside_the_warehouse(dag_run, cli_run, airflow_home, metadata_db):
    """PRIVACY: the keyed pseudonyms stored with the case records appear in no release file,
    report, task log, XCom or the Airflow metadata database."""
    stored: set[str] = set()
    for run in (dag_run, cli_run):
        with sqlite3.connect(run.out / "warehouse.sqlite") as conn:
            stored |= {r[0] for r in conn.execute("SELECT pseudonym FROM staged_record") if r[0]}
    assert len(stored) > 100
    files = [
        p
        for run in (dag_run, cli_run)
        for p in run.out.rglob("*")
        if p.is_file() and p.suffix != ".sqlite"
    ]
    files += [p for p in (airflow_home / "logs").rglob("*") if p.is_file()]
    texts = [dag_run.output, cli_run.output, sqlite_text(metadata_db), *map(file_text, files)]
    blob = "\n".join(texts)
    assert [p for p in stored if p in blob] == []
