"""The end of an annual-update run, light enough for a teardown task: free the work folder and
the store's lease."""

from __future__ import annotations

import logging
import shutil

from ctdc_harmonizer.errors import CtdcError
from ctdc_harmonizer.pipeline.results import Finished
from ctdc_harmonizer.run import locks, storage
from ctdc_harmonizer.run.plan import ReleasePlan

log = logging.getLogger(__name__)


def finish_run(plan: ReleasePlan) -> Finished:
    """End of a run, successful or not: remove the private work folders (staged frames, the
    unmapped lists, a release folder built but not published; on shared storage the run's
    whole prefix) and give the store's lease back. Idempotent; the DAG's teardown task. A
    prefix the store does not let it remove fails the task (retried) and keeps the lease."""
    if plan.nothing_to_do:  # the plan took no lease and made no folder
        return Finished(release=plan.release, work_folder_removed=False)
    removed = plan.local_path.exists()
    shutil.rmtree(plan.local_path, ignore_errors=True)
    try:
        removed = plan.work.remove() or removed
    except CtdcError:
        # Intermediates still on the shared store: the lease is kept, so that no new run
        # starts under the same prefix while this teardown retries.
        log.error(
            "release %s: intermediates under %s not removed; the store stays locked until "
            "they are (the teardown retries)",
            plan.release,
            storage.shown(plan.work_dir),
        )
        raise
    locks.release(plan.lock)
    log.info("release %s: work folder removed, lease released", plan.release)
    return Finished(release=plan.release, work_folder_removed=removed)
