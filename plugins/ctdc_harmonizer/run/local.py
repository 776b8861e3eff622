"""The whole annual update in one command (`ctdc run`): the DAG's steps, in a row.

Partners are independent until `combine`, so their chains run in parallel processes (one per
core by default), as the DAG's mapped task groups do. Start-up is paid once:

- the worker processes are forked from a fork server that imported the steps' libraries once
  (pandas, pyarrow, pandera), started before the plan is made, so its imports overlap the
  main process's own;
- Great Expectations, needed only to validate the release, is imported by a release process
  of its own while the partners' chains run (once: later runs of the same process reuse it);
  it then builds the release folder, while this process loads the warehouse;
- the largest delivery starts first, so no worker is left with a big partner at the end.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import forkserver
from pathlib import Path

from ctdc_harmonizer.run import steps
from ctdc_harmonizer.run.plan import RunPlan, plan_run
from ctdc_harmonizer.run.results import RunSummary

PRELOADED = ["ctdc_harmonizer.run.steps"]  # what every worker needs, imported once


def _worker_logging() -> None:
    from ctdc_harmonizer.safety import ValueFreeTracebacks

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(ValueFreeTracebacks())


def _in_environment(environment: dict[str, str], step, *args):
    """Run a step in a worker with this run's environment (the pseudonym key, the warehouse
    and storage settings): a forked worker otherwise has the fork server's, taken when the
    server started, and the release process outlives a run."""
    os.environ.clear()
    os.environ.update(environment)
    return step(*args)


def _import_quality() -> None:
    from ctdc_harmonizer.release import quality

    quality.import_great_expectations()


_release_process: ProcessPoolExecutor | None = None


def _release_executor(context: multiprocessing.context.BaseContext) -> ProcessPoolExecutor:
    """One process that builds release folders: it imports Great Expectations once (while
    the first run's partners are being read) and serves every later run of this process."""
    global _release_process
    if _release_process is None or _release_process._broken:
        _release_process = ProcessPoolExecutor(1, context, _worker_logging)
        _release_process.submit(_import_quality)
    return _release_process


def stop_workers() -> None:
    """Stop the release process, if this process started one (before a fast exit)."""
    global _release_process
    if _release_process is not None:
        _release_process.shutdown(wait=True, cancel_futures=True)
        _release_process = None


def _start_fork_server() -> multiprocessing.context.BaseContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOADED)
    forkserver.ensure_running()
    return context


def run(
    landing: str,
    out: str,
    release: str,
    partners: list[str] | None = None,
    mappings: str | None = None,
    warehouse_url: str | None = None,
    workers: int | None = None,
) -> RunSummary:
    """Plan, run every step, and always finish (on failure too: no staged frame or unmapped
    list stays behind, the lock is given back)."""
    # Started before planning, so the two import side by side; not for a run of one partner,
    # which runs in this process from start to end.
    parallel = workers != 1 and _expected_partners(landing, partners) > 1
    context = _start_fork_server() if parallel else None
    plan = plan_run(landing, out, release, partners, mappings, warehouse_url=warehouse_url)
    try:
        return run_planned(plan, workers, context)
    finally:
        steps.finish_run(plan)


# Work per delivered byte, roughly: a workbook is compressed, JSON lines repeat their keys.
WORK_PER_BYTE = {"excel": 5.0, "csv": 1.0, "jsonl": 0.5}


def _expected_partners(landing: str, partners: list[str] | None) -> int:
    """How many partners the run will have, before it is planned (the plan checks)."""
    if partners:
        return len([p for p in partners if p.strip()])
    root = Path(landing)
    if not root.is_dir():
        return 0
    return sum(1 for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _largest_first(plan: RunPlan) -> list[str]:
    """Partners by expected work, largest first: no worker is left alone with a big one at
    the end (longest-processing-time-first scheduling)."""

    def expected_work(partner: str) -> float:
        folder = plan.landing_path / partner
        size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
        return size * WORK_PER_BYTE[plan.partner_config(partner).reader.format]

    return sorted(plan.partners, key=expected_work, reverse=True)


def run_planned(
    plan: RunPlan,
    workers: int | None = None,
    context: multiprocessing.context.BaseContext | None = None,
) -> RunSummary:
    workers = workers or min(len(plan.partners), os.cpu_count() or 1)
    order = _largest_first(plan)
    if workers == 1:  # one process: everything in a row
        for partner in order:
            steps.partner_chain(plan, partner)
        steps.combine(plan)
        written = steps.write_release(plan)
        loaded = steps.load_warehouse(plan)
    else:
        context = context or _start_fork_server()
        environment = dict(os.environ)
        release = _release_executor(context)
        with ProcessPoolExecutor(workers, context, _worker_logging) as partners:
            chains = {
                p: partners.submit(_in_environment, environment, steps.partner_chain, plan, p)
                for p in order
            }
            for partner in plan.partners:
                chains[partner].result()  # a partner's error, in partner order
        steps.combine(plan)
        # The warehouse rows load while the folder is built; both publish together.
        loading = steps.start_warehouse_load(plan)
        try:
            written = release.submit(
                _in_environment, environment, steps.write_release, plan
            ).result()
        except BaseException:
            loading.abandon()
            raise
        loaded = steps.finish_warehouse_load(plan, loading)
    return RunSummary(
        written=written,
        warehouse=loaded,
        handoff=steps.hand_off(plan),
        unmapped_partner_folders=plan.unmapped_partner_folders or [],
    )
