"""Privacy loss per person across releases (basic composition, codebook v3 Appendix I).

Releases are cumulative: a survivor registered in 2010 is in every annual release, and each
DP fit that includes them adds its epsilon and delta to what they have lost. The release
ledger (ledger.py) counts per release label; this module counts per person:

- who: the people of a release are read from the store (`case_record` versions current in
  the release, in the release's own row order, checked equal to the hand-off's table); a
  person is the record's keyed pseudonym, or its keyed identity where the partner gives no
  record id (such a record cannot be linked to its other partners' records: see
  docs/privacy.md, "Privacy loss per person", for this and the other limits);
- when: one row per person and fit attempt in `privacy_person_ledger`, written before
  pac-synth's fit runs, under the attempt id the release ledger then records; what counts is
  every attempt not closed as `failed` (a crash mid-fit counts, as in the release ledger);
- the cap: `per_person` in schemas/synthesis_v1.yaml. A fit that would take anyone past it is
  refused before it runs, or (over_cap: leave_out) those people are left out of that
  release's synthesis input, counted in the result and the restricted report;
- withdrawals: a withdrawn person's rows are deleted with their records (store/commit.py), so
  they stop accruing and nothing of theirs is kept.

Nothing here returns, logs or reports a pseudonym: counts and the distribution of
cumulative epsilon only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import sqlalchemy as sa

from ctdc_harmonizer.codebook import Codebook
from ctdc_harmonizer.errors import CtdcError
from ctdc_harmonizer.synthesis.config import DpParams, PersonBudgetConfig
from ctdc_harmonizer.warehouse.models import PersonSpend, PrivacySpend

PERCENTILES = (50, 90, 99)
# Float sums of epsilons (12 + 12 + 12) must not miss an exact cap by rounding.
TOLERANCE = 1e-9


class PersonalBudgetExceeded(CtdcError):
    """A fit would take people past their lifetime privacy budget: refused before it runs."""


class NotAccountable(CtdcError):
    """The people of a release cannot be accounted (not in the store, or not its hand-off)."""


@dataclass(frozen=True)
class ReleasePeople:
    """The people of a release in its row order, and its table as the store holds it."""

    persons: pd.Series  # one key per row (pseudonym or identity key)
    table: pd.DataFrame  # the codebook columns, as release/folder.py's release_table


def release_people(url: str, release: str, codebook: Codebook) -> ReleasePeople | None:
    """The people of `release` from the store, in the order of its table; None when the store
    does not hold the release."""
    from ctdc_harmonizer.release.folder import release_table
    from ctdc_harmonizer.store.commit import KEYED_ORDER
    from ctdc_harmonizer.store.identity import release_order
    from ctdc_harmonizer.store.records import current_at
    from ctdc_harmonizer.warehouse.connection import warehouse
    from ctdc_harmonizer.warehouse.models import DataRelease, ReleaseExclusion, case_record_table
    from ctdc_harmonizer.warehouse.schema import migrate

    migrate(url)
    case = case_record_table
    with warehouse(url, f"reading the people of release '{release}'") as db:
        found = db.execute(
            sa.select(DataRelease.sequence, DataRelease.row_order).where(
                DataRelease.label == release
            )
        )
        if not found:
            return None
        sequence, row_order = found[0]
        excluded = sa.select(ReleaseExclusion.case_record_id).where(
            ReleaseExclusion.release_label == release
        )
        # No NULL reaches the Arrow reader: SQLite's ADBC driver types a column by its first
        # rows, and a NULL there then refuses the text after it. A person is the pseudonym,
        # else the identity key; a NULL variable reads as '' and is NULL again below (no
        # codebook value is empty).
        text = [v.name for v in codebook.variables if v.type != "year"]
        frame = (
            db.select_arrow(
                sa.select(
                    case.c.identity_key,
                    sa.func.coalesce(case.c.pseudonym, case.c.identity_key).label("person"),
                    *(
                        sa.func.coalesce(case.c[c], "").label(c) if c in text else case.c[c]
                        for c in codebook.columns
                    ),
                )
                .where(current_at(case, sequence), case.c.id.not_in(excluded))
                .order_by(case.c.id)
            )
            .to_pandas()
            .astype({"identity_key": "string[pyarrow]", "person": "string"})
        )
    frame[text] = frame[text].replace("", None)
    # The same order as the release folder's table (store/history.py's rebuild_release).
    if row_order == KEYED_ORDER:
        frame = frame.iloc[release_order(release, frame["identity_key"])]
    frame = frame.reset_index(drop=True)
    return ReleasePeople(frame["person"], release_table(frame[codebook.columns], codebook))


def check_same_table(people: ReleasePeople, handoff: pd.DataFrame, release: str) -> None:
    """The store's rows of the release are the hand-off's rows, in the same order: the keys
    then name exactly the people of each hand-off row (nothing else may be assumed)."""
    same = len(people.table) == len(handoff) and people.table.equals(
        handoff.reset_index(drop=True)[list(people.table.columns)].astype(dict(people.table.dtypes))
    )
    if not same:
        raise NotAccountable(
            f"release {release}: the hand-off's table differs from the release the store holds "
            f"({len(handoff)} rows handed off, {len(people.table)} in the store); its people "
            "cannot be accounted, refused before fit (rerun the annual update's hand-off)"
        )


def _counted_attempts():
    """Attempt ids that count: every attempt not closed as failed (ledger.py's rule)."""
    failed = sa.select(PrivacySpend.attempt_id).where(PrivacySpend.outcome == "failed")
    return PersonSpend.attempt_id.not_in(failed)


def cumulative(
    url: str, persons: pd.Series | None = None, ignore_attempts: tuple[str, ...] = ()
) -> pd.DataFrame:
    """Per person: epsilon and delta summed over every counted attempt that included them
    (index: person). `persons`: only these (None: everyone in the ledger);
    `ignore_attempts`: attempts left out of the sums."""
    from ctdc_harmonizer.warehouse.connection import warehouse
    from ctdc_harmonizer.warehouse.schema import migrate

    migrate(url)
    query = (
        sa.select(
            PersonSpend.person,
            sa.func.sum(PersonSpend.epsilon).label("epsilon"),
            sa.func.sum(PersonSpend.delta).label("delta"),
        )
        .where(_counted_attempts())
        .group_by(PersonSpend.person)
    )
    if ignore_attempts:
        query = query.where(PersonSpend.attempt_id.not_in(list(ignore_attempts)))
    with warehouse(url, "reading the per-person privacy ledger") as db:
        sums = db.select_arrow(query).to_pandas()
    sums = sums.astype({"person": "string", "epsilon": "float64", "delta": "float64"})
    sums = sums.set_index("person")
    if persons is not None:
        sums = sums.reindex(pd.Index(persons.unique(), dtype="string")).fillna(0.0)
    return sums


def projected(
    url: str, persons: pd.Series, params: DpParams, ignore_attempts: tuple[str, ...] = ()
) -> pd.DataFrame:
    """Per row of `persons`: the person's epsilon and delta after one more fit at `params`."""
    sums = cumulative(url, persons, ignore_attempts)
    after = sums.reindex(pd.Index(persons, dtype="string")).fillna(0.0)
    after["epsilon"] += params.epsilon
    after["delta"] += params.delta
    return after.reset_index(drop=True)


def over_cap(after: pd.DataFrame, cap: PersonBudgetConfig) -> pd.Series:
    """Rows whose person would be past the lifetime cap."""
    return (after["epsilon"] > cap.lifetime_epsilon * (1 + TOLERANCE)) | (
        after["delta"] > cap.lifetime_delta * (1 + TOLERANCE)
    )


def refusal(release: str, over: int, params: DpParams, cap: PersonBudgetConfig) -> str:
    return (
        f"release {release}: a fit at epsilon {params.epsilon:g} (delta {params.delta:g}) would "
        f"take {over} person(s) past the lifetime cap per person (epsilon "
        f"{cap.lifetime_epsilon:g}, delta {cap.lifetime_delta:g}); refused before fit "
        "(per_person in the synthesis config: lower epsilon, over_cap: leave_out, or a "
        "deliberate new cap)"
    )


def distribution(values: pd.Series) -> dict:
    """Count, max, mean and percentiles of cumulative epsilon (no person named)."""
    if values.empty:
        return {"people": 0}
    data = values.to_numpy(dtype=float)
    out = {"people": int(len(data)), "max": round(float(data.max()), 6)}
    out["mean"] = round(float(data.mean()), 6)
    for p in PERCENTILES:
        out[f"p{p}"] = round(float(np.percentile(data, p)), 6)
    return out


def record(url: str, attempt: str, release: str, persons: pd.Series, params: DpParams) -> int:
    """One row per distinct person of a fit, before the fit runs; returns how many."""
    from ctdc_harmonizer.warehouse.connection import SQLITE_DATETIME, warehouse

    unique = pd.Series(persons.unique(), dtype="string")
    now = datetime.now(UTC)
    with warehouse(url, "recording the people of a fit", write=True) as db:
        # SQLAlchemy's text form of a DateTime on SQLite; an explicit UTC offset for
        # PostgreSQL's COPY (timestamptz), whatever the session's time zone
        stamp = now.isoformat() if db.dialect == "postgresql" else now.strftime(SQLITE_DATETIME)
        rows = pa.table(
            {
                "attempt_id": pa.array([attempt] * len(unique), pa.string()),
                "release_label": pa.array([release] * len(unique), pa.string()),
                "person": pa.array(unique.to_numpy(dtype=object), pa.string()),
                "epsilon": pa.array([params.epsilon] * len(unique), pa.float64()),
                "delta": pa.array([params.delta] * len(unique), pa.float64()),
                "recorded_at": pa.array([stamp] * len(unique), pa.string()),
            }
        )
        db.insert_arrow(PersonSpend.__table__, rows)
    return len(unique)


def approval_note(url: str, params: DpParams, cap: PersonBudgetConfig) -> str:
    """Markdown for the annual update's approval request: the distribution of cumulative
    epsilon of the people accounted so far, and how many a synthesis at `params` would take
    past the cap (refused, or left out). Counts only."""
    try:
        sums = cumulative(url)
    except CtdcError:
        return "\n\n**Privacy loss per person**: the per-person ledger could not be read."
    shown = distribution(sums["epsilon"])
    if not shown["people"]:
        return (
            "\n\n**Privacy loss per person**: nobody has been in a DP fit yet "
            f"(cap per person: epsilon {cap.lifetime_epsilon:g})."
        )
    after = sums.assign(
        epsilon=sums["epsilon"] + params.epsilon, delta=sums["delta"] + params.delta
    )
    over = int(over_cap(after, cap).sum())
    action = "the synthesis will be refused" if cap.over_cap == "refuse" else "left out"
    return (
        "\n\n**Privacy loss per person** (every DP fit so far, summed per person):\n\n"
        "| people | max | p50 | p90 | p99 | cap |\n|---:|---:|---:|---:|---:|---:|\n"
        f"| {shown['people']:,} | {shown['max']:g} | {shown['p50']:g} | {shown['p90']:g} | "
        f"{shown['p99']:g} | {cap.lifetime_epsilon:g} |\n\n"
        f"A synthesis at epsilon {params.epsilon:g} would take {over:,} of them past the cap "
        f"if this release holds them ({action})."
    )
