"""A declared pipeline in one command (`ctdc run`): the same steps as the DAG, in a row.

Partners are independent until their chains end, so the chains run in parallel worker
processes (one per core by default, one more for much work; one for a single partner),
forked from a fork server that imported the chain's libraries once (pipeline/preload.py);
the largest delivery starts first, so no worker is left alone with a big partner at the end.
Meanwhile this process loads a new store's migrations. A worker logs through this process's
handlers (its records come over a queue, exceptions reduced to their type), so a run's log
is one stream, whichever process wrote a line. A worker that dies (SIGKILL, the OOM killer)
ends the run with an InfrastructureError, never a hang. `workers=1` (`ctdc run --workers 1`)
runs everything in this process.
Everything after the chains runs in this process, in the declared order, except, for a large
run, the steps whose results a later step takes as `Late` (the assembled release and its
folder, which the commit needs only before it commits): a process of its own imports Great
Expectations while the chains run, then assembles the release and builds the folder, one
after the other, while this process writes the partners' changes to the store (a small run
imports GX in a thread here and runs in a row). Nothing in that process reads the store
while the commit writes it (read_carried_records read it before). A step waiting for such a
result is postponed until it comes, the others go on in order.
The command line has no one to ask at the approval gate: it goes on (`ctdc run` is the data
team's own command). The teardown runs whatever happened.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import multiprocessing
import os
import resource
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import forkserver
from typing import Any

from ctdc_harmonizer.errors import InfrastructureError
from ctdc_harmonizer.memory import (
    collector_paused,
    imported_then_frozen,
    release_unused_memory,
)
from ctdc_harmonizer.pipeline.declaration import PARTNER_PARAMETER, PLAN_PARAMETER, Pipeline, Step
from ctdc_harmonizer.pipeline.results import AnnualUpdateRun

log = logging.getLogger(__name__)
# Work per delivered byte, roughly: a workbook is compressed, JSON lines repeat their keys.
WORK_PER_BYTE = {"excel": 5.0, "csv": 1.0, "jsonl": 0.5}
# A stored record harmonized again costs about what a delivered CSV row of it would.
WORK_PER_REHARMONIZED_RECORD = 300.0
# From this much expected work (about 8,000 delivered records) the release folder is built
# in a process of its own, beside the store's writes; below it a fresh process's Great
# Expectations import (~1.3 s of CPU) costs more than the overlap saves.
BACKGROUND_FROM_WORK = 4 * 1024 * 1024
# From this much expected work (about 500,000 delivered records) the chains run on one worker
# more than there are cores: chains end unevenly (their work is estimated; a workbook is
# parsed in a child beside its worker), and with a worker more the OS shares the cores among
# the last chains instead of leaving one idle. Below it the extra process costs more than it
# saves (two cores, one worker more: 40k records +0.15 s, 133k and 500k even, 1M -0.9 s).
EXTRA_WORKER_FROM_WORK = 256 * 1024 * 1024
# How long the end of a run waits for its workers' last log lines (see _logs_forwarded).
LOG_HAND_ON_SECONDS = 10


def _logger_levels() -> dict[str, int]:
    """This process's logger levels that were set (the root's included): a worker applies
    them, so it forwards only records this process would keep."""
    levels = {"": logging.getLogger().getEffectiveLevel()}
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and logger.level != logging.NOTSET:
            levels[name] = logger.level
    return levels


def _worker_logging(records: Any, levels: dict[str, int]) -> None:
    """A worker's log records go to the process that started it (`_logs_forwarded`), not to
    a stream of their own: the run's one set of handlers prints them, and a test's capture
    sees them. An exception is reduced to its type here, before the record is pickled."""
    from ctdc_harmonizer.safety import ValueFreeTracebacks

    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    forward = logging.handlers.QueueHandler(records)
    forward.addFilter(ValueFreeTracebacks())
    root.addHandler(forward)
    for name, level in levels.items():
        logging.getLogger(name or None).setLevel(level)


def _to_this_process_loggers(record: logging.LogRecord) -> None:
    """A worker's record, handed to the logger of its name here, as if logged here."""
    logger = logging.getLogger(record.name)
    if logger.isEnabledFor(record.levelno):
        logger.handle(record)


def _hand_on(records: Any) -> None:
    """The forwarding thread: every record the workers log, until the end mark (None)."""
    while (record := records.get()) is not None:
        _to_this_process_loggers(record)


@contextlib.contextmanager
def _logs_forwarded(
    context: multiprocessing.context.BaseContext,
) -> Iterator[tuple[Any, dict[str, int]]]:
    """A queue that workers log into (`_worker_logging`'s arguments) and a thread here that
    hands its records on; on the way out, the records still queued are handed on too (the
    pool is shut down first: a worker flushes its queue when it exits).

    Waited for a while, never forever: a worker killed while it wrote to the queue (the OOM
    killer) may leave it locked or a record half written, and the run must still end (with
    the pool's error) rather than hang; its last log lines are then missing, and said so."""
    records = context.Queue()
    forwarding = threading.Thread(target=_hand_on, args=(records,), daemon=True)
    forwarding.start()
    try:
        yield records, _logger_levels()
    finally:
        records.put_nowait(None)
        forwarding.join(LOG_HAND_ON_SECONDS)
        if forwarding.is_alive():
            log.warning(
                "the worker processes' last log lines did not arrive within %d s (a worker "
                "ended while writing them); they are missing from this log",
                LOG_HAND_ON_SECONDS,
            )
        records.cancel_join_thread()  # the end mark may never be written: do not wait for it
        records.close()


@contextlib.contextmanager
def _process_pool(processes: int) -> Iterator[ProcessPoolExecutor]:
    """`processes` forked from the fork server, logging through this process's handlers;
    shut down (waiting for what runs, on failure too) before the logs stop."""
    context = _start_fork_server()  # usually already running: started before the plan
    with _logs_forwarded(context) as logs:
        pool = ProcessPoolExecutor(processes, context, _worker_logging, logs)
        try:
            yield pool
        except BrokenProcessPool:
            raise InfrastructureError(
                "a worker process of this run ended abruptly (killed, for example by the "
                "out-of-memory killer); the run stopped before its commit: run it again "
                "(`--workers 1` uses less memory)"
            ) from None
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def call_step(
    pipeline: Pipeline, step: Step, plan: Any, results: dict[str, Any], **extra: Any
) -> Any:
    arguments = {PLAN_PARAMETER: plan, **extra}
    for parameter, source in pipeline.inputs_of(step).items():
        arguments[parameter] = results[source.step.name]
    wall, cpu = time.perf_counter(), time.process_time()
    result = step.func(**{k: v for k, v in arguments.items() if k in step.parameters})
    release_unused_memory()  # a step's freed memory, handed back before the next one
    # Counts and times only: where a run's time and memory go, per step.
    partner = extra.get(PARTNER_PARAMETER)
    log.info(
        "step %s%s took %.2f s (CPU %.2f s; peak %d MiB)",
        step.name,
        f" ({partner})" if partner else "",
        time.perf_counter() - wall,
        time.process_time() - cpu,
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,  # KiB on Linux
    )
    return result


def run_chain(pipeline: Pipeline, plan: Any, partner: str, environment: dict | None = None) -> Any:
    """One partner's chain, step after step, in this process; its last step's result.
    `environment`: the run's (a forked worker otherwise has the fork server's, taken when the
    server started: the pseudonym key, the warehouse and storage settings)."""
    if environment is not None:
        os.environ.clear()
        os.environ.update(environment)
    results: dict[str, Any] = {}
    for step in pipeline.chain:
        results[step.name] = call_step(
            pipeline, step, plan, results, **{PARTNER_PARAMETER: partner}
        )
    return results[pipeline.chain[-1].name]


def _start_fork_server() -> multiprocessing.context.BaseContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["ctdc_harmonizer.pipeline.preload"])
    forkserver.ensure_running()
    return context


def _expected_work(plan: Any, partner: str) -> float:
    """A partner's chain's work, roughly: its delivered bytes weighted by format, and its
    stored records when they are harmonized again (0 for a plan that names no partner's
    files)."""
    if not hasattr(plan, "partner_plans"):
        return 0.0
    entry = plan.partner_plans[partner]
    delivered = sum(f.size_bytes for f in entry.files)
    work = delivered * WORK_PER_BYTE[plan.partner_config(partner).reader.format]
    if entry.reharmonize:
        work += entry.stored_records * WORK_PER_REHARMONIZED_RECORD
    return work


def _total_work(plan: Any) -> float:
    """The run's expected chain work (0 for a plan that names no partner's files)."""
    return sum(_expected_work(plan, partner) for partner in getattr(plan, "partners", []))


def _largest_first(plan: Any) -> list[str]:
    """Partners by expected work, largest first (longest-processing-time-first); equal work
    keeps the plan's order."""
    return sorted(plan.partners, key=lambda p: _expected_work(plan, p), reverse=True)


def _default_workers(plan: Any) -> int:
    """Worker processes for the chains: one per core, one more for much work (see
    EXTRA_WORKER_FROM_WORK), never more than partners."""
    cores = os.cpu_count() or 1
    extra = 1 if cores > 1 and _total_work(plan) >= EXTRA_WORKER_FROM_WORK else 0
    return min(len(getattr(plan, "partners", [])), cores + extra)


def _in_workers(plan: Any, workers: int | None) -> bool:
    """Whether the chains run in worker processes (else in this one): whenever this run may
    use more than one process, also for one partner (its chain then runs beside what this
    process prepares for after it: Great Expectations' import, a new store's migrations)."""
    return bool(getattr(plan, "partners", [])) and _parallel(workers)


def _import_quality_checks() -> None:
    from ctdc_harmonizer.release.quality import import_great_expectations

    try:
        import_great_expectations()
    except Exception:  # the quality step imports it again and reports what went wrong
        log.debug("importing Great Expectations ahead of the quality checks failed")


def _prepare_background_process() -> None:
    """The background process's first task: import Great Expectations as the fork server
    imported the chains' libraries (memory.imported_then_frozen); the process is ours alone,
    so freezing costs nothing later."""
    with imported_then_frozen():
        _import_quality_checks()


def _warm_store_creation(plan: Any) -> None:
    """For a run that will create the store (its first release), Alembic's import and
    scripts, loaded ahead (warehouse.schema.warm_migrations): the main process creates the
    store after the chains, on the run's critical path."""
    if not hasattr(plan, "warehouse"):
        return
    from ctdc_harmonizer.warehouse.schema import warehouse_exists, warm_migrations

    try:
        if not warehouse_exists(plan.warehouse()):
            warm_migrations()
    except Exception:  # the real creation reports what went wrong
        log.debug("loading the store's migrations ahead of its creation failed")


def _prepare_main_process(plan: Any, great_expectations: bool) -> None:
    """What this process needs after the chains, loaded while they run: Great Expectations
    when the release folder is built here (a process that already imported it, such as a
    test session, pays nothing), and a new store's migrations."""
    if great_expectations:
        _import_quality_checks()
    _warm_store_creation(plan)


@contextlib.contextmanager
def _main_process_prepared(
    plan: Any, workers: int | None, background: Executor | None
) -> Iterator[None]:
    """While the chains run in workers, this process has nothing to do: a thread prepares
    what it needs after them (`_prepare_main_process`; GX only without a `background`
    process, which imports it itself), joined before any later step runs, so that no two
    migrations overlap."""
    if not _in_workers(plan, workers):
        yield
        return
    preparing = threading.Thread(
        target=_prepare_main_process, args=(plan, background is None), daemon=True
    )
    preparing.start()
    try:
        yield
    finally:
        preparing.join()


def _parallel(workers: int | None) -> bool:
    """Whether this run may use more than one process (`workers` 1 asks for one)."""
    return (workers is None or workers > 1) and (os.cpu_count() or 1) > 1


@contextlib.contextmanager
def _background_process(
    plan: Any, workers: int | None, wanted: bool = True
) -> Iterator[Executor | None]:
    """Where the release folder is built: for much work, a process of its own (forked from
    the fork server) that imports Great Expectations (~1.3 s of CPU, 140 MiB) while the chains
    run; yields it. For little work, or when no step is `wanted` in the background, None: the
    folder is built here."""
    if not (wanted and _parallel(workers) and _total_work(plan) >= BACKGROUND_FROM_WORK):
        yield None
        return
    # On failure too, a folder still being built is finished before the teardown.
    with _process_pool(1) as process:
        process.submit(_prepare_background_process)
        yield process


def run_chains(pipeline: Pipeline, plan: Any, workers: int | None = None) -> list[Any]:
    """Every partner's chain; results in the plan's partner order. A partner's error is
    raised in partner order (the first failing partner, as the plan lists them)."""
    if not _in_workers(plan, workers):
        return [run_chain(pipeline, plan, partner) for partner in plan.partners]
    environment = dict(os.environ)
    with _process_pool(min(workers or _default_workers(plan), len(plan.partners))) as pool:
        futures = {
            partner: pool.submit(run_chain, pipeline, plan, partner, environment)
            for partner in _largest_first(plan)
        }
        return [futures[partner].result() for partner in plan.partners]


def _in_background(pipeline: Pipeline, steps: list[Step]) -> set[str]:
    """Steps whose result a later step takes as `Late`: they may run in the background."""
    return {pipeline.inputs_of(step)[name].step.name for step in steps for name in step.late_inputs}


def _ready(pipeline: Pipeline, step: Step, results: dict[str, Any], here: bool = True) -> bool:
    """Whether every input of `step` is there; a `Late` one may still be coming if the step
    runs `here` (a future cannot be handed to another process). A finished background
    result is put into `results` as its value on the way."""
    for name, source in pipeline.inputs_of(step).items():
        if source.step.name not in results:  # its step has not run yet (one ran ahead)
            return False
        value = results[source.step.name]
        if isinstance(value, Future) and not (here and name in step.late_inputs):
            if not value.done():
                return False
            results[source.step.name] = value.result()  # a background step's error: raised
    return True


def call_steps(
    pipeline: Pipeline, steps: list[Step], plan: Any, needed: dict[str, Any]
) -> tuple[dict[str, Any], BaseException | None]:
    """`steps` one after the other in this (background) process, each taking what the
    earlier ones produced: the results of those that ran, and the error that stopped them."""
    results = dict(needed)
    done: dict[str, Any] = {}
    for step in steps:
        try:
            done[step.name] = results[step.name] = call_step(pipeline, step, plan, results)
        except Exception as error:  # raised by whatever waits for this step (value-free)
            return done, error
    return done, None


def _each_result(group: Future, steps: list[Step]) -> dict[str, Future]:
    """A future per step of a group run by `call_steps`: its result, or the error that
    stopped the group (for the step that raised it and those after it)."""
    futures = {step.name: Future() for step in steps}

    def settle(finished: Future) -> None:
        try:
            done, error = finished.result()
        except BaseException as lost:  # the background process itself failed
            done, error = {}, lost
        for name, future in futures.items():
            if name in done:
                future.set_result(done[name])
            else:
                future.set_exception(error)

    group.add_done_callback(settle)
    return futures


def _background_group(
    pipeline: Pipeline, first: Step, waiting: list[Step], later: set[str], results: dict
) -> list[Step]:
    """`first` (ready) and the background steps after it that need nothing but what is
    already here and what the group makes: one submission, run in order there (a future
    cannot be handed to another process, so a step needing an earlier one's result runs
    after it in the same process)."""
    group = [first]
    for step in waiting:
        if step.name not in later:
            continue
        made = {member.name for member in group}
        sources = [source.step.name for source in pipeline.inputs_of(step).values()]
        if all(
            name in made or (name in results and not isinstance(results[name], Future))
            for name in sources
        ):
            group.append(step)
    return group


def run_steps(
    pipeline: Pipeline,
    plan: Any,
    steps: list[Step],
    results: dict[str, Any],
    background: Executor | None = None,
) -> None:
    """Run `steps` after the chains, in order, into `results`. With a `background` process,
    a step whose result a later one takes as `Late` is started there (with the background
    steps after it that need only its result and what is here); a step needing such a
    result waits until it has come while the steps after it go on (module docstring)."""
    waiting = list(steps)
    later = _in_background(pipeline, steps) if background is not None else set()
    while waiting:
        step = next(
            (s for s in waiting if _ready(pipeline, s, results, here=s.name not in later)), None
        )
        if step is None:  # everything left needs what the background still makes
            pending = [v for v in results.values() if isinstance(v, Future) and not v.done()]
            if not pending:  # a declaration no order can run (Pipeline refuses them)
                raise RuntimeError(f"{pipeline.name}: no step can run next")
            wait(pending, return_when=FIRST_COMPLETED)
            continue
        waiting.remove(step)
        if step.name in later:
            group = _background_group(pipeline, step, waiting, later, results)
            for member in group[1:]:
                waiting.remove(member)
            made = {member.name for member in group}
            needed = {
                source.step.name: results[source.step.name]
                for member in group
                for source in pipeline.inputs_of(member).values()
                if source.step.name not in made
            }
            submitted = background.submit(call_steps, pipeline, group, plan, needed)
            results.update(_each_result(submitted, group))
        else:
            results[step.name] = call_step(pipeline, step, plan, results)
    for name, value in results.items():  # nothing is left running, nor its error unread
        if isinstance(value, Future):
            results[name] = value.result()


def run_pipeline(
    pipeline: Pipeline,
    plan: Any,
    workers: int | None = None,
    until_gate: bool = False,
) -> dict[str, Any]:
    """Run a planned pipeline's steps after the plan (not the teardown); each step's result
    by name. `until_gate`: stop before the gated steps (nothing committed or published)."""
    results: dict[str, Any] = {pipeline.plan_step.name: plan}
    steps = pipeline.release_steps + ([] if until_gate else pipeline.gated_steps)
    if not pipeline.chain:
        run_steps(pipeline, plan, steps, results)
        return results
    wanted = bool(_in_background(pipeline, steps))
    with _background_process(plan, workers, wanted) as background:
        with _main_process_prepared(plan, workers, background):
            results[pipeline.chain[-1].name] = run_chains(pipeline, plan, workers)
        run_steps(pipeline, plan, steps, results, background)
    return results


def _planned_arguments(pipeline: Pipeline, arguments: dict[str, Any]) -> dict[str, Any]:
    """The plan's arguments: the caller's that it takes, and the before-plan step's result
    (run here, with the caller's arguments it takes)."""
    before = pipeline.before_plan_step
    if before is None:
        return arguments
    # The before-plan step's own arguments (the plan does not take them) stop here.
    plan_takes = pipeline.plan_step.parameters
    planned = {k: v for k, v in arguments.items() if k in plan_takes or k not in before.parameters}
    given = {k: v for k, v in arguments.items() if k in before.parameters}
    planned[pipeline.plan_parameter_for_before()] = before.func(**given)
    return planned


def run(
    pipeline: Pipeline,
    workers: int | None = None,
    until_gate: bool = False,
    **plan_arguments: Any,
) -> dict[str, Any]:
    """Plan, run every step, and always finish (on failure too: no staged frame or unmapped
    list stays behind, the lease is given back). A plan with nothing to do runs nothing."""
    if pipeline.chain and _parallel(workers):
        # Started before the plan: its imports (the chains' libraries) overlap the planning.
        _start_fork_server()
    with collector_paused():  # the plan's work is mostly imports (memory.collector_paused)
        plan = pipeline.plan(**_planned_arguments(pipeline, plan_arguments))
    if getattr(plan, "nothing_to_do", False):
        return {pipeline.plan_step.name: plan}
    try:
        return run_pipeline(pipeline, plan, workers, until_gate)
    finally:
        if pipeline.teardown is not None:
            pipeline.teardown(plan)


def run_annual_update(
    landing: str,
    out: str,
    release: str,
    partners: list[str] | None = None,
    mappings: str | None = None,
    warehouse_url: str | None = None,
    accept_retirements: list[str] | None = None,
    workers: int | None = None,
    sources: str | None = None,
) -> AnnualUpdateRun:
    """`ctdc run`: the annual update, every step, committed at once (no approver)."""
    from ctdc_harmonizer.pipeline.annual_update import ANNUAL_UPDATE

    results = run(
        ANNUAL_UPDATE,
        workers=workers,
        landing=landing,
        out=out,
        release=release,
        partners=partners,
        mappings=mappings,
        warehouse_url=warehouse_url,
        accept_retirements=accept_retirements,
        sources=sources,
    )
    return AnnualUpdateRun(
        plan=results["plan_release"],
        assembled=results.get("assemble_release"),
        receipts=results.get("write_receipts"),
        folder=results.get("build_release_folder"),
        summary=results.get("summarize_release"),
        committed=results.get("commit_release"),
        published=results.get("publish_release_folder"),
        purged=results.get("purge_withdrawn_records"),
        handoff=results.get("hand_off_release"),
        sent=results.get("send_receipts"),
        cleared=results.get("clear_pulled_deliveries"),
    )
