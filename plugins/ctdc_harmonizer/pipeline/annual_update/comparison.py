"""The last step of a partner's chain, in full: what its delivery and mapping change in the
store. The rules are store/changes.py's; this module applies them to the chain's frames and
writes the partner's change set (new staged records and versions, the versions they close,
the partner's records once committed, its delivery's record and counts).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ctdc_harmonizer.codebook import default_codebook
from ctdc_harmonizer.columns import (
    CASE_ID,
    CONTENT,
    DELIVERY_FILE_ID,
    FILE,
    FROM_DELIVERY,
    FROM_STORE,
    HELD_BACK,
    IDENTITY,
    MAPPING,
    ORIGIN,
    PSEUDONYM,
    RELEASABLE_FROM,
    ROW,
    STAGED_ID,
    UNKNOWN_RELEASE_YEAR,
    Outcome,
)
from ctdc_harmonizer.errors import CtdcError
from ctdc_harmonizer.pipeline.results import HarmonizedPartner, PartnerChanges
from ctdc_harmonizer.privacy.linkage import LINK_COLUMNS
from ctdc_harmonizer.run.plan import ReleasePlan
from ctdc_harmonizer.run.workdir import PartnerWork
from ctdc_harmonizer.store import changes as rules
from ctdc_harmonizer.store.commit import PAYLOAD, REF
from ctdc_harmonizer.store.payload import fields_text, stored_fields
from ctdc_harmonizer.store.records import (
    CODEBOOK_VERSION,
    current_records,
    empty_records,
    typed_records,
)
from ctdc_harmonizer.warehouse.connection import warehouse

log = logging.getLogger(__name__)

KEY_FIELDS = [IDENTITY, CONTENT, PSEUDONYM, *LINK_COLUMNS]


class RetirementGuardError(CtdcError):
    """A full delivery would retire more of a partner's records than it allows."""


def _guard(plan: ReleasePlan, partner: str, retired: int, stored: int) -> None:
    config = plan.partner_config(partner)
    limit = config.delivery.max_retired_share
    if stored == 0 or retired / stored <= limit or partner in plan.accept_retirements:
        return
    raise RetirementGuardError(
        f"partner '{partner}': this full delivery would retire {retired} of its {stored} "
        f"stored records ({retired / stored:.0%}), more than the {limit:.0%} its partner.yaml "
        "allows (delivery.max_retired_share): it looks like a partial extract. Check the "
        "delivery; if these records really left the partner's dataset, run again accepting "
        f"them (DAG param accept_retirements: [{partner}]; ctdc run --accept-retirements "
        f"{partner})"
    )


def _versions_of(values: pd.DataFrame, target: pd.DataFrame) -> pd.DataFrame:
    """New harmonized versions (`values`) of stored records (`target`, same order)."""
    return values.assign(
        **{
            IDENTITY: target[IDENTITY],
            PSEUDONYM: target[PSEUDONYM],
            REF: pd.Series(pd.NA, index=values.index, dtype="Int64"),
            STAGED_ID: target[STAGED_ID],
            DELIVERY_FILE_ID: target[DELIVERY_FILE_ID],
            FILE: target[FILE],
        }
    )


def _ends(ids: pd.Series, reasons: pd.Series | str, column: str) -> pd.DataFrame:
    frame = pd.DataFrame({column: ids.astype("Int64").to_numpy(), "reason": reasons})
    return frame[frame[column].notna()].reset_index(drop=True)


def partner_changes(plan: ReleasePlan, harmonized: HarmonizedPartner) -> PartnerChanges:
    partner = harmonized.partner
    config = plan.partner_config(partner)
    entry = plan.partner_plans[partner]
    codebook = default_codebook()
    work = PartnerWork(harmonized.work, partner)
    # Only the columns used (memory: the HTCDS worker peaked here at 1M records); the
    # payloads are read once the new staged records are known, and only theirs are kept.
    keys = work.read_frame(work.KEYS, columns=[ORIGIN, *KEY_FIELDS])
    outcomes = work.read_frame(work.OUTCOMES, columns=[FILE, ROW, "outcome"])
    values = work.read_frame(work.HARMONIZED, columns=["_staged_row", *codebook.columns])
    removed = work.read_frame(work.REMOVED)
    erased_stored = work.read_frame(work.ERASED_STORED)
    info = work.read_json(work.STAGE_INFO)
    # Per staged row: from which release year a rejected row may be released (kept with the
    # records held back; not known for a chain that did not write it)
    releasable = (
        work.read_frame(work.RELEASABLE)[RELEASABLE_FROM].astype("Int64").array
        if work.exists(work.RELEASABLE)
        else pd.array([UNKNOWN_RELEASE_YEAR] * len(outcomes), dtype="Int64")
    )
    stored = empty_records(codebook)
    if plan.base:  # a first release has nothing stored to compare with
        with warehouse(plan.warehouse(), f"reading partner '{partner}' from the store") as db:
            stored = current_records(db, partner, plan.base, codebook)
    previous = len(stored)
    stored = stored[~stored[IDENTITY].isin(set(erased_stored[IDENTITY]))].reset_index(drop=True)

    # Harmonized values by staged row (a row the mapper did not harmonize has none).
    by_row = values.set_index("_staged_row")[codebook.columns]
    del values
    delivered = keys[ORIGIN] == FROM_DELIVERY
    d_keys = keys[delivered].reset_index(drop=True)
    d_rows = np.flatnonzero(delivered.to_numpy())
    d_out = outcomes.loc[delivered.to_numpy()].reset_index(drop=True)
    comparison = rules.compare_delivery(
        pd.DataFrame(
            {"identity": d_keys[IDENTITY], "content": d_keys[CONTENT], "outcome": d_out["outcome"]}
        ),
        pd.DataFrame(
            {
                "identity": stored[IDENTITY],
                "content": stored[CONTENT],
                "staged_id": stored[STAGED_ID],
                "case_id": stored[CASE_ID],
            }
        ),
        entry.mode if entry.files else rules.INCREMENTAL,  # no files: nothing is retired
    )
    retired_now = comparison.stored_end.isin(rules.RETIREMENT_REASONS)
    if entry.mode == rules.FULL and entry.files:
        _guard(plan, partner, int(retired_now.sum()), len(stored))

    fate = comparison.fate
    mapping = config.harmonization_hash
    harmonized_row = (d_out["outcome"] == Outcome.HARMONIZED).to_numpy()
    # New staged versions: delivered rows that are new, revise a stored one, or are rejected
    # and differ from what is stored (held back).
    fresh = comparison.inserted
    staged_new = d_keys.loc[fresh, KEY_FIELDS].reset_index(drop=True)
    payloads = work.read_frame(work.PAYLOADS)["payload"]
    staged_new[PAYLOAD] = payloads[fresh].reset_index(drop=True).astype("string")
    del payloads
    staged_new[FILE] = d_out.loc[fresh, FILE].reset_index(drop=True).astype("string")
    staged_new[ROW] = d_out.loc[fresh, ROW].reset_index(drop=True).astype("int64")
    staged_new[REF] = np.arange(len(staged_new), dtype=np.int64)
    new_held = ~harmonized_row[fresh]

    version_parts, updated_at, updated_values, case_end_parts = [], [], [], []
    # 1. harmonized versions of the new staged records (a held-back one has none)
    with_values = fresh & harmonized_row
    new_values = by_row.loc[d_rows[with_values]].reset_index(drop=True)
    # Only the columns used (filtering the payloads too copied ~50 MB of text at 250k rows).
    refs = staged_new.loc[~new_held, [IDENTITY, PSEUDONYM, REF, FILE]].reset_index(drop=True)
    version_parts.append(
        new_values.assign(
            **{
                IDENTITY: refs[IDENTITY],
                PSEUDONYM: refs[PSEUDONYM],
                REF: refs[REF],
                STAGED_ID: pd.Series(pd.NA, index=new_values.index, dtype="Int64"),
                DELIVERY_FILE_ID: pd.Series(pd.NA, index=new_values.index, dtype="Int64"),
                FILE: refs[FILE],
            }
        )
    )
    # 2. unchanged records that need a harmonized version (re-harmonized, or held back)
    matched = comparison.matched
    unchanged = (fate == rules.UNCHANGED).to_numpy()
    at = matched[unchanged]
    needs = stored[CASE_ID].isna().to_numpy()[at] | bool(entry.reharmonize)
    redo_rows, redo_at = d_rows[unchanged][needs], at[needs]
    if len(redo_at):
        redo = by_row.loc[redo_rows].reset_index(drop=True)
        target = stored.iloc[redo_at].reset_index(drop=True)
        version_parts.append(_versions_of(redo, target))
        case_end_parts.append(_ends(target[CASE_ID], rules.REHARMONIZED, CASE_ID))
        updated_at.append(redo_at)
        updated_values.append(redo)
    # 3. delivered again unchanged but rejected today: the stored record is held back
    still = (fate == Outcome.REJECTED).to_numpy() & (matched >= 0) & ~fresh
    held_at = matched[still]
    case_end_parts.append(_ends(stored[CASE_ID].iloc[held_at], rules.HELD_BACK, CASE_ID))
    # 4. stored records harmonized again (mapping or codebook changed; or held back)
    from_store = (keys[ORIGIN] == FROM_STORE).to_numpy()
    s_rows = np.flatnonzero(from_store)
    s_keys = keys.loc[from_store].reset_index(drop=True)
    s_end = rules.reharmonized_end(outcomes.loc[from_store, "outcome"].reset_index(drop=True))
    position = pd.Series(np.arange(len(stored)), index=pd.Index(stored[IDENTITY]))
    s_at = (
        s_keys[IDENTITY].map(position).astype(int).to_numpy() if len(s_keys) else np.zeros(0, int)
    )
    again = (s_end == "").to_numpy()
    if again.any():
        redo = by_row.loc[s_rows[again]].reset_index(drop=True)
        target = stored.iloc[s_at[again]].reset_index(drop=True)
        version_parts.append(_versions_of(redo, target))
        updated_at.append(s_at[again])
        updated_values.append(redo)
    held = (s_end == rules.HELD_BACK).to_numpy()
    dropped_stored = (s_end == rules.REHARMONIZED_EXCLUDED).to_numpy()
    reharm_case = stored[CASE_ID].iloc[s_at].reset_index(drop=True)
    case_end_parts.append(_ends(reharm_case, s_end.replace("", rules.REHARMONIZED), CASE_ID))
    case_new = pd.concat(version_parts, ignore_index=True)
    # Ends: revisions and retirements decided by the delivery, erasures, re-harmonization.
    ended = comparison.stored_end != ""
    staged_end = pd.concat(
        [
            _ends(stored.loc[ended, STAGED_ID], comparison.stored_end[ended], STAGED_ID),
            _ends(erased_stored[STAGED_ID], rules.ERASED, STAGED_ID),
            _ends(
                stored[STAGED_ID].iloc[s_at[dropped_stored]].reset_index(drop=True),
                rules.REHARMONIZED_EXCLUDED,
                STAGED_ID,
            ),
        ],
        ignore_index=True,
    )
    case_end = pd.concat(
        [
            _ends(stored.loc[ended, CASE_ID], comparison.stored_end[ended], CASE_ID),
            _ends(erased_stored[CASE_ID], rules.ERASED, CASE_ID),
            *case_end_parts,
        ],
        ignore_index=True,
    ).drop_duplicates(CASE_ID, keep="first")

    # The partner's records once committed.
    keep = ~ended.to_numpy()
    keep[s_at[dropped_stored]] = False
    current = stored.copy()
    current[REF] = pd.Series(pd.NA, index=current.index, dtype="Int64")
    if updated_at:  # new harmonized versions of stored records, column by column
        at_rows = np.concatenate(updated_at)
        new = pd.concat(updated_values, ignore_index=True)
        # Each column taken from the old values and the new ones (Arrow's take: setting a
        # re-harmonized history's rows in place one column at a time was ~6x slower).
        take = np.arange(len(current))
        take[at_rows] = len(current) + np.arange(len(at_rows))
        for name in codebook.columns:
            column = current[name]
            both = pd.concat([column, new[name].astype(column.dtype)], ignore_index=True)
            current[name] = both.take(take).set_axis(current.index)
        current.loc[at_rows, CASE_ID] = pd.NA
        current.loc[at_rows, MAPPING] = mapping
        current.loc[at_rows, CODEBOOK_VERSION] = codebook.version
        current.loc[at_rows, HELD_BACK] = False
        current.loc[at_rows, RELEASABLE_FROM] = pd.NA
    # Stored records held back again whose release year the store did not know and now does
    # (NA is known too: no release year can release the record).
    was_unknown = stored[RELEASABLE_FROM].iloc[s_at[held]].eq(UNKNOWN_RELEASE_YEAR)
    now_known = releasable[s_rows[held]] != UNKNOWN_RELEASE_YEAR
    learned = int(
        (
            was_unknown.to_numpy(dtype=bool, na_value=False)
            & now_known.to_numpy(dtype=bool, na_value=True)
        ).sum()
    )
    held_rows = np.concatenate([s_at[held], held_at])
    if len(held_rows):
        for name in codebook.columns:
            current.loc[held_rows, name] = pd.NA
        current.loc[held_rows, CASE_ID] = pd.NA
        current.loc[held_rows, HELD_BACK] = True
        current.loc[held_rows, RELEASABLE_FROM] = releasable[
            np.concatenate([s_rows[held], d_rows[still]])
        ]
    # the new staged records, with their harmonized values where they have some
    added = staged_new[[IDENTITY, CONTENT, PSEUDONYM, *LINK_COLUMNS, FILE, REF]].copy()
    # Each column taken from the new values (-1, a held-back record: missing); setting them
    # in place through numpy objects was ~0.6 s at 250k rows.
    spread = np.full(len(added), -1, dtype=np.intp)
    spread[~new_held] = np.arange(len(new_values))
    for name in codebook.columns:
        column = new_values[name].array.take(spread, allow_fill=True)
        added[name] = pd.Series(column, index=added.index)
    # Missing for a held-back record; made as Arrow text, the type the records are kept in
    # (typed_records), not as a Python object per row.
    added[MAPPING] = pd.array(
        pc.if_else(pa.array(new_held, type=pa.bool_()), pa.scalar(None, pa.string()), mapping),
        dtype="string[pyarrow]",
    )
    added[CODEBOOK_VERSION] = codebook.version
    added[HELD_BACK] = new_held
    added_from = releasable[d_rows[fresh]]  # a new array: indexing copies
    added_from[~new_held] = pd.NA
    added[RELEASABLE_FROM] = added_from
    current = pd.concat([current.loc[keep], added], ignore_index=True)
    refs = current[REF]
    current = typed_records(current, codebook)
    current[REF] = refs.astype("Int64").to_numpy()

    counts, delivery = _delivery_record(
        plan, partner, info, d_out, fate, removed, int(retired_now.sum()), mapping
    )
    for name, frame in (
        (work.STAGED_NEW, staged_new),
        (work.CASE_NEW, case_new),
        (work.STAGED_END, staged_end),
        (work.CASE_END, case_end),
        (work.CURRENT, current),
    ):
        work.write_frame(name, frame)
    if delivery is not None:
        work.write_json(work.DELIVERY, delivery)
    reasons = comparison.stored_end.value_counts()
    added_count = int((comparison.inserted & (comparison.matched < 0)).sum())
    revised_count = int((comparison.stored_end == rules.REVISED_REASON).sum())
    result = PartnerChanges(
        partner=partner,
        new=added_count,
        revised=revised_count,
        unchanged=counts[rules.UNCHANGED],
        retired=int(retired_now.sum()) + int(dropped_stored.sum()),
        reharmonized=int(again.sum()) + len(redo_at) if entry.reharmonize else int(again.sum()),
        held_back=int(held.sum()),
        erased_stored=len(erased_stored),
        current=len(current),
        work=str(work.root),
    )
    work.write_json(
        work.CHANGE_COUNTS,
        {
            "previous": previous,
            "added": added_count,
            "revised": revised_count,
            "unchanged": result.unchanged,
            "retired": {
                **{str(r): int(reasons.get(r, 0)) for r in rules.RETIREMENT_REASONS},
                rules.REHARMONIZED_EXCLUDED: int(dropped_stored.sum()),
            },
            "erased": len(erased_stored),
            "reharmonized": result.reharmonized,
            "held_back": int(current[HELD_BACK].sum()),
            "current": len(current),
            "releasable_learned": learned,
        },
    )
    log.info(
        "partner %s: %d new, %d revised, %d unchanged, %d retired, %d re-harmonized, %d held "
        "back, %d erased from the store; %d current records",
        partner,
        result.new,
        result.revised,
        result.unchanged,
        result.retired,
        result.reharmonized,
        result.held_back,
        result.erased_stored,
        result.current,
    )
    return result


def _pair_counts(files: pd.Series, kinds: pd.Series) -> dict[tuple, int]:
    """{(file, kind): rows} over the pairs present (missing values left out), as the
    groupby's value_counts gave it, counted with integer codes (the groupby over a text
    index cost ~0.1 s at 250k rows)."""
    file_codes, file_names = pd.factorize(files.to_numpy(), use_na_sentinel=True)
    kind_codes, kind_names = pd.factorize(kinds.to_numpy(), use_na_sentinel=True)
    present = (file_codes >= 0) & (kind_codes >= 0)
    width = max(len(kind_names), 1)
    counts = np.bincount(
        file_codes[present] * width + kind_codes[present], minlength=len(file_names) * width
    )
    return {
        (file_names[at // width], kind_names[at % width]): int(counts[at])
        for at in np.flatnonzero(counts)
    }


def _delivery_record(
    plan: ReleasePlan,
    partner: str,
    info: dict,
    delivered: pd.DataFrame,
    fate: pd.Series,
    removed: pd.DataFrame,
    retired: int,
    mapping: str,
) -> tuple[dict[str, int], dict | None]:
    """Where each delivered row went, per file: rows_read = new + revised + unchanged +
    rejected + excluded + erased + duplicates_merged."""
    kinds = [rules.NEW, rules.REVISED, rules.UNCHANGED, Outcome.REJECTED, Outcome.EXCLUDED]
    files = {}
    totals = dict.fromkeys([*kinds, Outcome.ERASED, Outcome.DUPLICATES_MERGED], 0)
    # Counted once per (file, outcome), not once per file: a delivery may hold 2,000 files.
    mine_all = _pair_counts(delivered[FILE], fate) if len(fate) else {}
    gone_all = removed.groupby([FILE, "outcome"]).size().to_dict() if len(removed) else {}
    for name, meta in info["files"].items():
        counts = {str(k): int(mine_all.get((name, k), 0)) for k in kinds}
        for kind in (Outcome.ERASED, Outcome.DUPLICATES_MERGED):
            counts[str(kind)] = int(gone_all.get((name, kind), 0))
        for key, value in counts.items():
            totals[key] += value
        files[name] = {
            "sha256": meta["sha256"],
            "size_bytes": meta.get("size_bytes"),
            "counts": {"rows_read": meta["rows_read"]}
            | {f"rows_{k}": v for k, v in counts.items()},
        }
    totals = {str(k): v for k, v in totals.items()}
    withdrawals = info.get("withdrawals")
    if withdrawals:  # recorded so that it is applied once; its lines are not records
        files[withdrawals["name"]] = {
            "sha256": withdrawals["sha256"],
            "size_bytes": withdrawals["size_bytes"],
            "counts": {"rows_read": 0},
            "withdrawals": True,
        }
    if not files:
        return totals, None
    rows_read = sum(f["counts"]["rows_read"] for f in files.values())
    return totals, {
        "partner": partner,
        "mode": plan.partner_plans[partner].mode,
        "source": "landing folder",
        "received_at": info["received_at"],
        "mapping": mapping,
        "payload_fields": fields_text(stored_fields(plan.partner_config(partner))),
        "files": files,
        "counts": {"rows_read": rows_read} | {f"rows_{k}": v for k, v in totals.items()},
        "records_retired": retired,
    }
