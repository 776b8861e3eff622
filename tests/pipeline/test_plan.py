"""Run planning: defaults of scheduled runs, partners that did not deliver, bad labels."""

import contextlib
import json
from pathlib import Path

import pandas as pd
import pytest

from ctdc_harmonizer import samples
from ctdc_harmonizer.errors import CtdcError
from ctdc_harmonizer.pipeline.local import run_annual_update
from ctdc_harmonizer.run import plan as planning
from support.harness import release_files, store_tables


@pytest.fixture
def landing(tmp_path):
    samples.generate("case_management", tmp_path / "landing", n=20, seed=1)
    return tmp_path / "landing"


@pytest.mark.parametrize(
    ("run_date", "label"),
    [("2026-01-01T00:00:00Z", "2025"), ("2026-11-21T09:30:00Z", "2026")],
)
def test_scheduled_release_is_labelled_by_the_year_before_the_run(
    landing, tmp_path, run_date, label
):
    plan = planning.plan_scheduled_release("", str(landing), str(tmp_path / "out"), [], run_date)
    assert plan.release == label and plan.release_year == int(label)


def test_environment_gives_default_folders(landing, tmp_path, monkeypatch):
    monkeypatch.setenv("CTDC_LANDING", str(landing))
    monkeypatch.setenv("CTDC_OUT", str(tmp_path / "releases"))
    plan = planning.plan_scheduled_release("r1", "", "", [], pd.Timestamp("2026-03-01"))
    assert plan.out == str((tmp_path / "releases").resolve())
    assert plan.release_dir.endswith("/releases/r1")


def test_partners_without_delivery_have_no_work(landing, tmp_path):
    plan = planning.plan_release(str(landing), str(tmp_path / "out"), "2025")
    assert plan.partners == ["case_management"]
    assert plan.partner_plans["case_management"].state == "delivered"
    assert plan.partner_plans["iom"].state == "carried" and not plan.partner_plans["iom"].files
    assert "iom" in plan.carried


def test_a_named_partner_without_delivery_is_an_error(landing, tmp_path):
    with pytest.raises(CtdcError, match="partner 'iom': landing folder"):
        planning.plan_release(str(landing), str(tmp_path / "out"), "2025", ["iom"])


@pytest.mark.parametrize("label", ["", "../x", ".hidden"])
def test_release_label_must_be_a_plain_name(landing, tmp_path, label):
    with pytest.raises(CtdcError, match="release label"):
        planning.plan_release(str(landing), str(tmp_path / "out"), label, ["case_management"])


def test_errors_survive_a_process_boundary():
    import pickle

    from ctdc_harmonizer.errors import CoverageError, ExtractError, MappingError

    for error in (
        MappingError("values.csv", "bad", line=3, column="value"),
        ExtractError("iom", "x.csv", "required column is missing", column="sex", row=4),
        CoverageError("too many unknown values"),
    ):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
        assert copy.__dict__ == error.__dict__


def test_partners_run_in_parallel_processes(tmp_path):
    landing = tmp_path / "landing"
    samples.generate_all(landing, 60, 3, ["case_management", "ctdc_legacy"])
    info = run_annual_update(
        str(landing),
        str(tmp_path / "out"),
        "2025",
        workers=2,
        warehouse_url=f"sqlite:///{tmp_path}/w.sqlite",
    )
    assert info.folder.totals["unaccounted"] == 0
    assert info.committed.versions_inserted == info.folder.rows > 0


def _two_partners(tmp_path: Path, records: int = 60) -> Path:
    landing = tmp_path / "landing"
    samples.generate_all(landing, records, 3, ["case_management", "hotline"])
    return landing


def _run(landing: Path, out: Path, store: Path, workers: int = 2):
    return run_annual_update(
        str(landing), str(out), "2025", workers=workers, warehouse_url=f"sqlite:///{store}"
    )


def _nothing_committed(store: Path) -> None:
    """The store holds its schema's version and nothing else (no file at all will do)."""
    stored = store_tables(store) if store.exists() else {}
    stored.pop("schema", None)
    assert {table for table, rows in stored.items() if rows} <= {"alembic_version"}


def _spy_on_background(monkeypatch) -> list:
    from ctdc_harmonizer.pipeline import local

    used: list = []
    background_process = local._background_process

    @contextlib.contextmanager
    def spying(*args):
        with background_process(*args) as process:
            used.append(process)
            yield process

    monkeypatch.setattr(local, "_background_process", spying)
    return used


def test_a_folder_built_beside_the_store_writes_the_same_release(tmp_path, monkeypatch):
    """A large run builds the release folder in a process of its own while this one writes
    the partners' changes to the store (the commit takes the folder as `Late`); a small one
    runs in a row. Both write the same release folder and the same store."""
    from ctdc_harmonizer.pipeline import local

    landing = _two_partners(tmp_path)
    used = _spy_on_background(monkeypatch)
    folders, stores = {}, {}
    for name, threshold in (("in_a_row", float("inf")), ("beside", 0)):
        monkeypatch.setattr(local, "BACKGROUND_FROM_WORK", threshold)
        info = _run(landing, tmp_path / name, tmp_path / f"{name}.sqlite")
        folders[name] = info.folder.release_dir
        stores[name] = store_tables(tmp_path / f"{name}.sqlite")
        assert info.summary is not None and info.published is not None
    assert used[0] is None and used[1] is not None  # the process was used for "beside" only
    assert release_files(Path(folders["in_a_row"])) == release_files(Path(folders["beside"]))
    assert stores["in_a_row"] == stores["beside"]
    assert sum(len(rows) for rows in stores["beside"].values()) > 200


def test_a_folder_that_fails_to_build_beside_the_store_commits_nothing(tmp_path, monkeypatch):
    """The commit writes while the folder is built, and asks for it before committing: a
    build that fails (here: the release's name is taken by a folder that is not a release)
    leaves the store without the release, and the run fails with the build's error."""
    from ctdc_harmonizer.errors import CtdcError
    from ctdc_harmonizer.pipeline import local

    landing = _two_partners(tmp_path)
    used = _spy_on_background(monkeypatch)
    monkeypatch.setattr(local, "BACKGROUND_FROM_WORK", 0)
    (tmp_path / "out" / "2025").mkdir(parents=True)
    (tmp_path / "out" / "2025" / "notes.txt").write_text("not a release")
    with pytest.raises(CtdcError, match="exists and is not a release folder"):
        _run(landing, tmp_path / "out", tmp_path / "w.sqlite")
    assert used and used[0] is not None
    _nothing_committed(tmp_path / "w.sqlite")
    assert (tmp_path / "out" / "2025" / "notes.txt").read_text() == "not a release"
    assert not (tmp_path / "out" / ".work" / "2025").exists()


def test_neither_the_assembly_nor_the_folder_build_opens_the_store(tmp_path, monkeypatch):
    """`ctdc run` assembles the release and builds its folder while the commit holds the
    store's write transaction: a step that read the store then would wait for a commit that
    waits for it. Every engine made while either runs is caught here (the run in this
    process, in a row), in a release with a carried partner, read before the commit by
    read_carried_records."""
    import inspect

    import sqlalchemy

    from ctdc_harmonizer.samples.next_year import next_year
    from ctdc_harmonizer.warehouse import connection, schema

    watched = {"assemble_release", "build_release_folder"}
    engines: list[str | None] = []  # per engine or connection: the watched step, if any

    def recording(make):
        def create_engine(*args, **kwargs):
            steps = [f.function for f in inspect.stack() if f.function in watched]
            engines.append(steps[0] if steps else None)
            return make(*args, **kwargs)

        return create_engine

    landing = _two_partners(tmp_path, 30)
    out, store = tmp_path / "out", tmp_path / "w.sqlite"
    _run(landing, out, store, workers=1)
    next_year(landing)  # the hotline's increment; the NGO (case_management) delivers nothing
    monkeypatch.setattr(sqlalchemy, "create_engine", recording(sqlalchemy.create_engine))
    monkeypatch.setattr(schema, "create_engine", recording(schema.create_engine))
    # A SQLite file is opened through ADBC, without an engine.
    monkeypatch.setattr(connection, "open_warehouse", recording(connection.open_warehouse))
    again = run_annual_update(
        str(landing),
        str(out),
        "2026",
        workers=1,
        warehouse_url=f"sqlite:///{store}",
    )
    assert again.plan.partner_plans["case_management"].state == "carried"
    assert again.assembled.rows == again.folder.rows > 0
    assert len(engines) >= 3  # the plan, the chain's comparison, the carried read, the commit
    assert engines.count(None) == len(engines), engines


def test_a_commit_that_fails_after_writing_every_change_leaves_nothing(tmp_path, monkeypatch):
    """The commit asks for the folder's metadata last, after every partner's rows are
    written: if the folder is not what was built, the whole transaction is rolled back."""
    from ctdc_harmonizer.errors import CtdcError
    from ctdc_harmonizer.pipeline import local
    from ctdc_harmonizer.release import folder as release_folder

    landing = _two_partners(tmp_path)
    monkeypatch.setattr(local, "BACKGROUND_FROM_WORK", 0)
    staged_metadata = release_folder.staged_metadata
    monkeypatch.setattr(
        release_folder,
        "staged_metadata",
        lambda staging: {**staged_metadata(staging), "folder_sha256": "0" * 64},
    )
    with pytest.raises(CtdcError, match="the built folder changed after it was built"):
        _run(landing, tmp_path / "out", tmp_path / "w.sqlite")
    assert (tmp_path / "w.sqlite").exists()  # migrated before the commit began
    _nothing_committed(tmp_path / "w.sqlite")
    assert not (tmp_path / "out" / "2025").exists()


def test_office_lock_and_hidden_files_are_not_extracts(landing, tmp_path):
    folder = landing / "case_management"
    (folder / "~$htcds_case_export.xlsx").write_bytes(b"lock")
    (folder / ".htcds_case_export.xlsx.swp").write_bytes(b"swap")
    info = run_annual_update(
        str(landing),
        str(tmp_path / "out"),
        "2025",
        ["case_management"],
        warehouse_url=f"sqlite:///{tmp_path}/w.sqlite",
    )
    assert info.folder.totals["rows_read"] == 20 and info.folder.totals["unaccounted"] == 0
    # Not read, and named with their reason (nothing delivered is left out unnamed).
    expected = {
        "~$htcds_case_export.xlsx": "lock_file",
        ".htcds_case_export.xlsx.swp": "hidden_file",
    }
    assert info.plan.partner_plans["case_management"].not_read == expected
    recon = json.loads((tmp_path / "out" / "2025" / "reconciliation.json").read_text())
    assert recon["partners"]["case_management"]["not_read"] == expected
    assert set(recon["partners"]["case_management"]["files"]) == {"htcds_case_export.xlsx"}
    meta = json.loads((tmp_path / "out" / "2025" / "metadata.json").read_text())
    assert meta["partners"]["case_management"]["not_read"] == expected


def test_nothing_delivered_is_an_empty_plan_not_an_error(tmp_path):
    (tmp_path / "landing").mkdir()
    plan = planning.plan_scheduled_release(
        None, str(tmp_path / "landing"), str(tmp_path / "out"), None, "2026-01-01"
    )
    assert plan.partners == [] and plan.release == "2025"
    assert not (tmp_path / "out").exists()  # nothing written for an empty run


def test_a_named_partner_is_still_required_to_deliver(tmp_path):
    (tmp_path / "landing").mkdir()
    with pytest.raises(CtdcError, match="partner 'iom': landing folder"):
        planning.plan_scheduled_release(
            None, str(tmp_path / "landing"), str(tmp_path / "out"), ["iom"], "2026-01-01"
        )


def test_a_named_landing_folder_that_does_not_exist_is_an_error(tmp_path):
    with pytest.raises(CtdcError, match="landing folder .*typo not found"):
        planning.plan_scheduled_release(
            None, str(tmp_path / "typo"), str(tmp_path / "out"), None, "2026-01-01"
        )


@pytest.mark.parametrize(
    ("url", "retryable", "said"),
    [
        ("not a url", False, "is not a database URL"),
        ("nosuchdialect://corpus", False, "unknown database dialect or driver 'nosuchdialect'"),
        ("mysql+nosuchdriver://u:s3cr3t@h/d", False, "is unusable"),
        ("postgresql+asyncpg://u:s3cr3t@127.0.0.1/d", False, "asynchronous driver"),
        ("postgresql+psycopg://u:s3cr3t@127.0.0.1:9/d?sslpassword=s3cr3t", True, "reached"),
    ],
)
def test_unusable_warehouse_fails_the_plan_before_any_work(landing, tmp_path, url, retryable, said):
    """A bad setting is a clear error naming it, never retried; an unreachable database is an
    infrastructure error (retried in Airflow). Neither prints the password, nor touches out."""
    from ctdc_harmonizer.safety import is_infrastructure

    out = tmp_path / "out"
    with pytest.raises(CtdcError) as err:
        planning.plan_release(str(landing), str(out), "2025", warehouse_url=url)
    message = str(err.value)
    assert said in message and "warehouse" in message
    assert "s3cr3t" not in message and err.value.__cause__ is None
    assert is_infrastructure(err.value) is retryable
    assert not out.exists()  # failed before the out folder, its lock and work area
