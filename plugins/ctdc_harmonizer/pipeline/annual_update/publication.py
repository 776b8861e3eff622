"""The release steps of the annual update after approval: commit the release and its changes
to the store, publish the release folder, purge the people withdrawn in this run from earlier
folders, hand the release off to synthesis.

The order is the guarantee: the store commits in one transaction recording the folder's
content hash, and only then is the folder renamed into place. A crash between the two leaves
a store whose latest release has no (or an older) folder, which the next plan and `ctdc
check` report; running the release again replaces both.
"""

from __future__ import annotations

import functools
import logging

from ctdc_harmonizer.pipeline.declaration import Late, resolved
from ctdc_harmonizer.pipeline.results import (
    AssembledRelease,
    CommittedRelease,
    HandedOff,
    PartnerChanges,
    PublishedRelease,
    PurgedReleases,
    ReleaseFolder,
)
from ctdc_harmonizer.run.plan import ReleasePlan

log = logging.getLogger(__name__)


def commit_release(
    plan: ReleasePlan,
    partners: list[PartnerChanges],
    assembled: Late[AssembledRelease],
    folder: Late[ReleaseFolder],
) -> CommittedRelease:
    """Write the release (with the built folder's metadata and content hash) and every
    changed partner's changes to the store, in one transaction (store/commit.py). The
    assembled release (its row count, its partners, the records its linkage merged away) and
    the folder are needed only at the end, before the transaction commits: the command line
    writes the partners' changes while the release is still being assembled and its folder
    built (pipeline/local.py), and commits nothing if either fails."""
    import pandas as pd

    from ctdc_harmonizer.codebook import default_codebook
    from ctdc_harmonizer.privacy.registry import apply_pending_purges
    from ctdc_harmonizer.release.folder import staged_metadata
    from ctdc_harmonizer.run import locks
    from ctdc_harmonizer.run.workdir import PartnerWork, WorkDir
    from ctdc_harmonizer.store.commit import Assembly, ChangeSet, ReleaseRow, commit

    locks.check(plan.lock, plan.release)
    codebook = default_codebook()
    changed = {p.partner: PartnerWork(p.work, p.partner) for p in partners}

    def change_set(partner: str, work: PartnerWork) -> ChangeSet:
        return ChangeSet(
            partner=partner,
            delivery=work.read_json(work.DELIVERY) if work.exists(work.DELIVERY) else None,
            # Readers: the commit reads each frame when it comes to it (store/commit.py).
            staged_new=functools.partial(work.read_frame, work.STAGED_NEW),
            case_new=functools.partial(work.read_frame, work.CASE_NEW),
            staged_end=functools.partial(work.read_frame, work.STAGED_END),
            case_end=functools.partial(work.read_frame, work.CASE_END),
            current=functools.partial(work.read_frame, work.CURRENT),
            mapping=plan.partner_config(partner).harmonization_hash,
            snapshot_stale=bool(work.read_json(work.CHANGE_COUNTS).get("releasable_learned")),
        )

    def entities(codes: set[str]) -> list[dict]:
        configs = {code: plan.partner_config(code) for code in sorted(codes)}
        return [
            {"code": code, "name": c.name, "datasource_type": c.datasource}
            for code, c in configs.items()
        ]

    # One partner at a time, as the commit asks for it, and each of its frames as the commit
    # comes to it: four partners' changes of 250k records at once, then one partner's five
    # frames at once, were the largest process of a 1M-record run.
    changes = (change_set(p, work) for p, work in sorted(changed.items()))
    # This run's withdrawals, as each partner's chain found them.
    withdrawn = [w.read_frame(w.WITHDRAWN) for w in changed.values() if w.exists(w.WITHDRAWN)]

    def assembly() -> Assembly:
        """What the assembly decided; raises what it raised."""
        done = resolved(assembled)
        work = WorkDir(done.work)
        return Assembly(
            rows=done.rows,
            entities=entities(set(done.partners) | set(done.changed)),
            merged=work.read_frame(work.MERGED),
        )

    def built_metadata() -> dict:
        """The built folder's metadata; raises what its build raised."""
        built = resolved(folder)
        metadata = staged_metadata(plan.staging_dir)
        if metadata["folder_sha256"] != built.folder_sha256:
            from ctdc_harmonizer.errors import CtdcError

            raise CtdcError(
                f"release {plan.release}: the built folder changed after it was built; run again"
            )
        return metadata

    release = ReleaseRow(
        label=plan.release,
        sequence=plan.sequence,
        base=plan.base,
        replaces=plan.replaces,
        codebook_version=codebook.version,
        metadata=built_metadata,
        assembly=assembly,
    )
    # A purge an earlier run could not finish is applied first (registry.py).
    apply_pending_purges(plan.warehouse(), plan.out_path)
    committed = commit(
        plan.warehouse(),
        release,
        entities(set(changed)),
        changes,
        pd.concat(withdrawn, ignore_index=True)
        if withdrawn
        else pd.DataFrame({"pseudonym": [], "partner": []}, dtype="string"),
        codebook,
        plan.out_path,
    )
    return CommittedRelease(
        release=plan.release,
        sequence=committed.sequence,
        staged_inserted=committed.staged_inserted,
        versions_inserted=committed.versions_inserted,
        versions_closed=committed.versions_closed,
        deliveries=committed.deliveries,
        withdrawals_recorded=committed.withdrawals_recorded,
        records_erased=committed.records_erased,
        exclusions=committed.exclusions,
        releases_to_purge=sorted(committed.releases_to_purge),
        work=str(plan.work.root),
    )


def publish_release_folder(
    plan: ReleasePlan, folder: ReleaseFolder, committed: CommittedRelease
) -> PublishedRelease:
    """Rename the built folder into place (after the commit: see the module docstring)."""
    from ctdc_harmonizer.release.folder import swap_into_place
    from ctdc_harmonizer.run import locks

    locks.check(plan.lock, plan.release)
    swap_into_place(plan.staging_dir, plan.release_path, plan.aside_dir)
    log.info(
        "release %s published in %s (sequence %d)",
        plan.release,
        plan.release_path,
        committed.sequence,
    )
    return PublishedRelease(
        release=plan.release,
        release_dir=str(plan.release_path),
        folder_sha256=folder.folder_sha256,
        rows=folder.rows,
    )


def purge_withdrawn_records(
    plan: ReleasePlan, committed: CommittedRelease, published: PublishedRelease
) -> PurgedReleases:
    """Rewrite the earlier release folders that held people withdrawn in this run (their
    stored records were erased by the commit), each with an audit entry (counts only)."""
    from ctdc_harmonizer.privacy.registry import apply_pending_purges

    counts = apply_pending_purges(plan.warehouse(), plan.out_path)
    if counts["records_purged"]:
        log.info(
            "withdrawals: %d record(s) purged from %d earlier release folder(s)",
            counts["records_purged"],
            counts["folders_rewritten"],
        )
    return PurgedReleases(**counts)


def hand_off_release(plan: ReleasePlan, published: PublishedRelease) -> HandedOff:
    """Write the release's hand-off folder for synthesis (table + manifest), next to it."""
    from ctdc_harmonizer.synthesis.handoff import write_handoff

    handed = HandedOff(**write_handoff(published.release_dir))
    log.info("release %s handed off in %s (%d rows)", plan.release, handed.handoff, handed.rows)
    return handed
