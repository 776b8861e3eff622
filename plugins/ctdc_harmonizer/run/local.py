"""The whole annual update in one command (`ctdc run`): the DAG's steps, in a row.

Partners are independent until `combine`, so their chains run in parallel processes (one per
core by default), as the DAG's mapped task groups do.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

from ctdc_harmonizer.run import steps
from ctdc_harmonizer.run.plan import RunPlan, plan_run
from ctdc_harmonizer.run.results import RunSummary


def _worker_logging() -> None:
    from ctdc_harmonizer.safety import ValueFreeTracebacks

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(ValueFreeTracebacks())


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
    plan = plan_run(landing, out, release, partners, mappings, warehouse_url=warehouse_url)
    try:
        return run_planned(plan, workers)
    finally:
        steps.finish_run(plan)


def run_planned(plan: RunPlan, workers: int | None = None) -> RunSummary:
    workers = workers or min(len(plan.partners), os.cpu_count() or 1)
    if workers > 1:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=_worker_logging
        ) as pool:
            futures = [pool.submit(steps.partner_chain, plan, p) for p in plan.partners]
            for future in futures:
                future.result()  # re-raises the partner's error, in partner order
    else:
        for partner in plan.partners:
            steps.partner_chain(plan, partner)
    steps.combine(plan)
    written = steps.write_release(plan)
    loaded = steps.load_warehouse(plan)
    return RunSummary(
        written=written,
        warehouse=loaded,
        handoff=steps.hand_off(plan),
        unmapped_partner_folders=plan.unmapped_partner_folders or [],
    )
