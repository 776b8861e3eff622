"""What a failed run keeps of the partners whose chains succeeded: their counts.

When one partner fails on data, the release is not assembled and nothing is committed or
published; the run's teardown then deletes the work folder (pseudonyms, linkage keys). Before
it does, `healthy_partner_reports` reads each healthy partner's chain results (its receipt,
release/receipts.py, and its changes against the store) into a value-free report: where its
rows went (read, harmonized, rejected, excluded, erased, merged), what it would change in the
store, and its rejected rows counted by reason and column. No value, file row or row number
is in it, so the Airflow metadata database may keep it for the run's report page.
"""

from __future__ import annotations

from ctdc_harmonizer.pipeline.results import HealthyPartners, PartnerChanges, PartnerOutcome
from ctdc_harmonizer.run.plan import ReleasePlan

STORE_CHANGES = ("new", "revised", "unchanged", "retired", "current")


def healthy_partner_reports(plan: ReleasePlan, partners: list[PartnerChanges]) -> HealthyPartners:
    """The counts of every partner whose chain reached its last step (module docstring)."""
    from ctdc_harmonizer.release.receipts import receipt_from_work
    from ctdc_harmonizer.run.workdir import PartnerWork

    outcomes, rejected = [], []
    for changes in sorted(partners, key=lambda p: p.partner):
        config = plan.partner_config(changes.partner)
        receipt = receipt_from_work(
            PartnerWork(changes.work, changes.partner), plan.release, config.unmapped_min_rows
        )
        outcomes.append(
            PartnerOutcome(
                partner=changes.partner,
                files=len(receipt.files),
                reconciles=receipt.reconciles,
                **receipt.totals.model_dump(),
                **{name: getattr(changes, name) for name in STORE_CHANGES},
            )
        )
        by_reason: dict[tuple[str, str], int] = {}
        for group in receipt.rejected:  # per file, column and reason: summed over files
            key = (group.reason, group.column)
            by_reason[key] = by_reason.get(key, 0) + group.rows
        rejected += [
            {"partner": changes.partner, "reason": reason, "column": column, "rows": rows}
            for (reason, column), rows in sorted(by_reason.items())
        ]
    return HealthyPartners(release=plan.release, partners=outcomes, rejected=rejected)
