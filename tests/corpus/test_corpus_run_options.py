"""Bad-input corpus: run options and out-folder state (release label, out, warehouse, landing)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import subprocess
from pathlib import Path

import pytest

from support.corpus import (
    IOM_FILE,
    NAME,
    PHONE,
    Case,
    CsvTable,
    Env,
    any_of,
    argv_for,
    case_ids,
    check_no_half_release,
    release_is_complete,
    run_case,
)

P = "iom"


def overlong_label(env: Env) -> None:
    env.release = "ctdc-2025-" + "r" * 290


def path_label(env: Env) -> None:
    env.release = "../escaped-2025"


def control_char_label(env: Env) -> None:
    env.release = "2025\nERROR forged log line"


def out_is_a_file(env: Env) -> None:
    env.out.write_text("not a folder\n", encoding="utf-8")


def out_read_only(env: Env) -> None:
    env.out.mkdir()
    done = subprocess.run(["chattr", "+i", str(env.out)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip("cannot make a read-only folder here (chattr +i)")
    env.cleanups.append(lambda: subprocess.run(["chattr", "-i", str(env.out)], check=False))


def out_not_creatable(env: Env) -> None:
    env.out = Path("/sys/ctdc-corpus-out")  # sysfs refuses new folders, even to root


def foreign_release_folder(env: Env) -> None:
    (env.out / env.release).mkdir(parents=True)
    (env.out / env.release / "notes.txt").write_text("the team's own notes\n", encoding="utf-8")


def foreign_folder_kept(result) -> None:
    assert (result.release_dir / "notes.txt").read_text() == "the team's own notes\n"


def unknown_partner_folder(env: Env) -> None:
    folder = env.landing / "ngo_new"
    folder.mkdir()
    (folder / "export.csv").write_text(
        f"name,phone\n{env.plant(NAME)},{env.plant(PHONE)}\n", encoding="utf-8"
    )


def unknown_partner_reported(result) -> None:
    meta = (result.release_dir / "metadata.json").read_text(encoding="utf-8")
    assert "ngo_new" in meta, "the unmapped partner folder is not reported in metadata.json"


def bad_warehouse_url(env: Env) -> None:
    env.warehouse = "nosuchdialect://corpus"


def unreachable_warehouse(env: Env) -> None:
    env.warehouse = "postgresql+psycopg://postgres@127.0.0.1:9/ctdc_corpus_nowhere"


def landing_missing(env: Env) -> None:
    env.landing = env.root / "no-such-landing"


def in_process_run(env: Env) -> int:
    from ctdc_harmonizer import cli

    # A setup run: its own output is not the case's (the case judges the run that follows).
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            return cli.main(argv_for(env))
        except BaseException:  # noqa: BLE001 - the case run reports tracebacks; here only setup
            return -1


def digest(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "quality" not in p.parts
    }


def failed_rerun_after_release(env: Env) -> None:
    """A good release, then a rerun on a broken delivery: the published release survives."""
    assert in_process_run(env) == 0
    env.previous = digest(env.out / env.release)  # type: ignore[attr-defined]
    t = CsvTable(env.path(P, IOM_FILE))
    t.rows[3].append(env.plant(NAME))
    t.write()


def previous_release_intact(result) -> None:
    folder = result.release_dir
    check_no_half_release(folder)
    assert release_is_complete(folder), "the published release was lost by a failed rerun"
    assert digest(folder) == result.env.previous, "the published release changed"


def rerun_after_failed_run(env: Env) -> None:
    """A run that fails on a name in a coded field, then a fixed delivery: nothing of the
    failed run (staged frames, unmapped list) is left behind."""
    path = env.path(P, IOM_FILE)
    original = path.read_bytes()
    t = CsvTable(path)
    t.set(4, "nationality", env.plant(NAME))
    t.write()
    assert in_process_run(env) == 1
    path.write_bytes(original)


def rerun_with_other_label_after_failure(env: Env) -> None:
    """The failed run's leftovers must not survive a successful run of another release."""
    rerun_after_failed_run(env)
    env.release = "2025-rc2"


def two_releases_same_out(env: Env) -> None:
    assert in_process_run(env) == 0
    env.release = "2025-rc2"
    # A new release needs something new: IOM delivers its extract again (a byte changed, the
    # same records), so its unchanged records are compared with the store.
    for extract in (env.landing / P).glob("iom_case_export_*.csv"):
        extract.write_bytes(extract.read_bytes() + b"\n")


def both_releases_complete(result) -> None:
    for label in ("2025", "2025-rc2"):
        folder = result.env.out / label
        assert release_is_complete(folder), f"release {label} incomplete"
        check_no_half_release(folder)
    recon = json.loads((result.release_dir / "reconciliation.json").read_text())
    assert recon["release"] == "2025-rc2"


CASES = [
    Case(
        id="release-label-overlong",
        partner=P,
        mutate=overlong_label,
        exit=1,
        names=[any_of("release", "label")],
        promise="over-long release label: clear error",
    ),
    Case(
        id="release-label-path",
        partner=P,
        mutate=path_label,
        exit=1,
        names=[any_of("release", "label")],
        promise="release label with a path: clear error",
    ),
    Case(
        id="release-label-control-char",
        partner=P,
        mutate=control_char_label,
        exit=None,
        names=[any_of("release", "label")],
        promise="release label with a line break (open): no traceback",
    ),
    Case(
        id="out-is-a-file",
        partner=P,
        mutate=out_is_a_file,
        exit=1,
        promise="out folder is a file: ctdc error",
    ),
    Case(
        id="out-read-only",
        partner=P,
        mutate=out_read_only,
        exit=1,
        promise="read-only out folder: ctdc error",
    ),
    Case(
        id="out-not-creatable",
        partner=P,
        mutate=out_not_creatable,
        exit=1,
        promise="uncreatable out folder: ctdc error",
    ),
    Case(
        id="out-foreign-release-folder",
        partner=P,
        mutate=foreign_release_folder,
        exit=1,
        check=foreign_folder_kept,
        promise="a folder that is not a release is never replaced",
    ),
    Case(
        id="landing-unknown-partner-folder",
        partner=P,
        mutate=unknown_partner_folder,
        exit=0,
        check=unknown_partner_reported,
        partners=[],
        promise="unknown partner folder reported in metadata, not read",
    ),
    Case(
        id="landing-missing",
        partner=P,
        mutate=landing_missing,
        exit=1,
        names=[any_of("landing", "no-such-landing")],
        promise="missing landing folder: clear error",
    ),
    Case(
        id="warehouse-bad-url",
        partner=P,
        mutate=bad_warehouse_url,
        exit=1,
        names=[any_of("warehouse", "url")],
        promise="unusable warehouse URL: clear error, not a traceback",
    ),
    Case(
        id="warehouse-unreachable",
        partner=P,
        mutate=unreachable_warehouse,
        exit=1,
        names=[any_of("warehouse", "connect")],
        promise="unreachable warehouse: clear error, not a traceback",
    ),
    Case(
        id="rerun-broken-keeps-release",
        partner=P,
        mutate=failed_rerun_after_release,
        exit=1,
        names=[IOM_FILE],
        check=previous_release_intact,
        promise="a failed rerun leaves the published release whole",
    ),
    Case(
        id="rerun-after-failed-run",
        partner=P,
        mutate=rerun_after_failed_run,
        exit=0,
        promise="no row-level leftovers of a failed run",
    ),
    Case(
        id="other-release-after-failed-run",
        partner=P,
        mutate=rerun_with_other_label_after_failure,
        exit=0,
        promise="no leftovers of a failed run of another release",
    ),
    Case(
        id="two-releases-one-out",
        partner=P,
        mutate=two_releases_same_out,
        exit=0,
        check=both_releases_complete,
        promise="a second release beside the first leaves both complete",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
def test_run_option(case, corpus_env, capsys, caplog):
    run_case(case, corpus_env(case), capsys, caplog)
