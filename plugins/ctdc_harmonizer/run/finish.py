"""The end of an annual-update run, light enough for a teardown task: free the work folder and
the release lock, and say how the run ended."""

from __future__ import annotations

import logging
import shutil

from ctdc_harmonizer.errors import CtdcError
from ctdc_harmonizer.run import locks, storage
from ctdc_harmonizer.run.plan import RunPlan
from ctdc_harmonizer.run.results import Finished

log = logging.getLogger(__name__)


def finish_run(plan: RunPlan) -> Finished:
    """End of a run, successful or not: remove the private work folders (staged frames, the
    unmapped list; on shared storage the run's whole prefix) and give the release's lock back.
    Idempotent; the DAG's teardown task. A prefix the store does not let it remove fails the
    task (retried) and keeps the lock."""
    if plan.nothing_delivered:  # the plan took no lock and made no folder
        return Finished(release=plan.release, work_folder_removed=False)
    removed = plan.local_path.exists()
    shutil.rmtree(plan.local_path, ignore_errors=True)
    try:
        removed = plan.work.remove() or removed
    except CtdcError:
        # Intermediates still on the shared store: the lock is kept, so that no new run of
        # this release starts under the same prefix while this teardown retries.
        log.error(
            "release %s: intermediates under %s not removed; the release stays locked until "
            "they are (the teardown retries)",
            plan.release,
            storage.shown(plan.work_dir),
        )
        raise
    locks.release(plan.lock)
    log.info("release %s: work folder removed, lock released", plan.release)
    return Finished(release=plan.release, work_folder_removed=removed)


def release_outcome(summary: dict | None, published: dict | None, decision: dict | None) -> str:
    """How the run ended, for the data team: published, or why not (an error, so the run
    shows as failed). `decision` is the approval's recorded answer (None: nobody answered
    before the timeout, or the step was never reached)."""
    if not summary:
        raise CtdcError("release not published: an earlier step failed")
    if published:
        return f"release {summary['release']} published"
    why = f"rejected by {decision['by'] or 'the data team'}" if decision else "no approval"
    raise CtdcError(f"release {summary['release']} NOT published: {why}")
