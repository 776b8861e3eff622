"""The annual update's steps around the partners' drops (deliveries/): the pull before the
plan, the receipts back to the partners' outboxes, and clearing the pulled copies once the
store holds them. Each step is a no-op for a deployment without a sources file."""

from __future__ import annotations

import logging

from ctdc_harmonizer.deliveries.pull import Arrivals, pull_deliveries
from ctdc_harmonizer.pipeline.results import (
    ClearedDeliveries,
    HandedOff,
    PartnerReceipts,
    SentReceipts,
)
from ctdc_harmonizer.run.plan import ReleasePlan

log = logging.getLogger(__name__)

__all__ = ["Arrivals", "clear_pulled_deliveries", "pull_deliveries", "send_receipts"]


def send_receipts(plan: ReleasePlan, receipts: PartnerReceipts) -> SentReceipts:
    """Copy each delivering partner's receipt (JSON and HTML) to its source's outbox,
    under `<outbox>/<release>/`. Before the approval, like the receipts themselves: a
    partner learns what became of its rows whatever the data team decides. An outbox that
    cannot be reached is reported (the approval request shows it), not fatal: the receipt
    stays in the out folder."""
    from pathlib import Path

    from ctdc_harmonizer.deliveries.remote import open_drop, transport_error
    from ctdc_harmonizer.deliveries.sources import load_sources

    if not plan.arrivals.sources:
        return SentReceipts(release=plan.release)
    declared = load_sources(plan.arrivals.sources)
    sent, not_sent = {}, {}
    for partner, paths in sorted(receipts.receipts.items()):
        source = declared.get(partner)
        if source is None or not source.outbox:
            not_sent[partner] = "no outbox declared in the sources file"
            continue
        folder = f"{source.outbox.rstrip('/')}/{plan.release}"
        try:
            drop = open_drop(source)
            for path in (paths.json_path, paths.html_path):
                drop.write(folder, Path(path).name, Path(path).read_bytes())
        except Exception as exc:  # the transport's text may name a host: class only
            error = transport_error(source, "write the receipt to", exc)
            log.warning("%s", error)
            not_sent[partner] = str(error)
            continue
        via = f" via {source.conn_id}" if source.conn_id else ""
        sent[partner] = f"{source.kind}{via}:{folder}"
        log.info("partner %s: receipt sent to its outbox", partner)
    return SentReceipts(release=plan.release, sent=sent, not_sent=not_sent)


def clear_pulled_deliveries(plan: ReleasePlan, handed: HandedOff) -> ClearedDeliveries:
    """Once the release is committed and handed off: the plain copies of pulled files the
    store now holds are deleted from the landing folder, and sealed copies past their
    retention from `<out>/.deliveries/` (deliveries/pull.py `clear_pulled`)."""
    from ctdc_harmonizer.deliveries.pull import clear_pulled

    if not plan.arrivals.sources:
        return ClearedDeliveries()
    counts = clear_pulled(plan.landing, plan.out, plan.warehouse())
    log.info(
        "pulled copies deleted: %d plain, %d sealed (%d sealed kept for their retention)",
        counts["plain_deleted"],
        counts["sealed_deleted"],
        counts["sealed_kept"],
    )
    return ClearedDeliveries(**counts)
