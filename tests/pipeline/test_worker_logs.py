"""A run's log is one stream: the lines its worker processes log reach this process's handlers
(so the command line prints them once, and a test's `caplog` sees them), with an exception
reduced to its type before the record leaves the worker; `workers=1` keeps every step here."""

from __future__ import annotations

import logging
import os
import signal
import threading

import pytest
from pydantic import BaseModel, ConfigDict

from ctdc_harmonizer import cli
from ctdc_harmonizer.errors import InfrastructureError
from ctdc_harmonizer.pipeline import local
from ctdc_harmonizer.pipeline.declaration import Pipeline

PLANTED = "Zarqa Plantedname 1987-11-23"
log = logging.getLogger("ctdc_harmonizer.tests.worker_logs")


class Plan(BaseModel):
    model_config = ConfigDict(frozen=True)
    partners: list[str]


class Read(BaseModel):
    partner: str
    process: int


class Counted(BaseModel):
    processes: list[int]


def make_plan(partners: list[str]) -> Plan:
    return Plan(partners=partners)


def read_noisily(plan: Plan, partner: str) -> Read:
    """Logs what a careless library might: a value inside an exception's message."""
    try:
        raise ValueError(f"cannot parse {PLANTED!r}")
    except ValueError:
        log.warning("partner %s: a cell could not be read", partner, exc_info=True)
    log.debug("partner %s: a debug line this run does not keep", partner)
    return Read(partner=partner, process=os.getpid())


def count_processes(plan: Plan, read_noisily: list[Read]) -> Counted:
    return Counted(processes=[read.process for read in read_noisily])


NOISY = Pipeline(
    name="noisy", plan=make_plan, per_partner=(read_noisily,), steps=(count_processes,)
)


def warnings_of(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == log.name and r.levelno == logging.WARNING]


@pytest.mark.parametrize("partners", [["iom"], ["iom", "ngo"]])
def test_workers_log_through_this_process_without_values(partners, caplog):
    if not local._parallel(None):
        pytest.skip("one core: every chain runs in this process")
    caplog.set_level(logging.INFO)
    counted = local.run(NOISY, partners=partners)["count_processes"]
    assert os.getpid() not in counted.processes  # even one partner's chain ran in a worker
    lines = warnings_of(caplog)
    assert sorted(r.process for r in lines) == sorted(counted.processes)
    for record in lines:
        assert "a cell could not be read [unexpected ValueError" in record.getMessage()
    assert PLANTED.split()[1] not in caplog.text
    # The level set here holds there: the debug lines never crossed.
    assert not [r for r in caplog.records if r.levelno == logging.DEBUG and r.name == log.name]


def read_or_die(plan: Plan, partner: str) -> Read:
    """The out-of-memory killer, as a worker meets it: SIGKILL, no chance to clean up."""
    log.info("partner %s: reading", partner)
    if partner == "ngo":
        os.kill(os.getpid(), signal.SIGKILL)
    return Read(partner=partner, process=os.getpid())


def test_a_worker_killed_ends_the_run_with_a_clear_error_not_a_hang(caplog):
    if not local._parallel(None):
        pytest.skip("one core: every chain runs in this process")
    dying = Pipeline(name="dying", plan=make_plan, per_partner=(read_or_die,), steps=())
    caplog.set_level(logging.INFO)
    outcome: dict = {}

    def run() -> None:
        try:
            local.run(dying, partners=["iom", "ngo"])
        except BaseException as error:  # noqa: BLE001 - what the run raised is the finding
            outcome["error"] = error

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    runner.join(120)  # a hang would be the bug: the thread is left behind, the test fails
    assert not runner.is_alive(), "the run hung after its worker was killed"
    assert isinstance(outcome.get("error"), InfrastructureError)
    assert "a worker process of this run ended abruptly" in str(outcome["error"])


def test_one_worker_keeps_every_step_in_this_process(caplog):
    caplog.set_level(logging.INFO)
    counted = local.run(NOISY, workers=1, partners=["iom", "ngo"])["count_processes"]
    assert counted.processes == [os.getpid(), os.getpid()]
    assert len(warnings_of(caplog)) == 2


@pytest.mark.parametrize("given", ["0", "-1", "two", "1.5", "٣"])
def test_the_workers_option_takes_a_whole_number_of_one_or_more(given, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.main(["run", "--landing", str(tmp_path), "--out", str(tmp_path), "--workers", given])
    assert stopped.value.code == 2
    assert "--workers: expects a whole number of 1 or more" in capsys.readouterr().err
