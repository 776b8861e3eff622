"""Names every stage shares: bookkeeping columns, row outcomes and report tables.

One home, so a stage never retypes a string another stage wrote. Bookkeeping columns start
with `_`: they travel with the rows through the private work folder and never reach a
release file (the release holds the codebook columns only).
"""

from __future__ import annotations

from enum import StrEnum

# --- bookkeeping columns of the staged and harmonized frames ---------------------------------
FILE = "_file"  # the delivered file a row came from (its name, not a path)
ROW = "_row"  # the line (or sheet row) the partner's data officer sees, 1-based
PARTNER = "_partner"  # the partner code, added when the partners' rows are combined
PSEUDONYM = "_pseudonym"  # the keyed pseudonym (privacy/); stored in the warehouse only
# The store's bookkeeping (store/): which record a row is, its stored ids and provenance.
IDENTITY = "_identity"  # the record's identity key across deliveries (store/identity.py)
CONTENT = "_content"  # keyed hash of the staged values as read: equal, unchanged
CASE_ID = "_case_id"  # the stored harmonized version (case_record.id), if any
STAGED_ID = "_staged_id"  # the stored staged record (staged_record.id), if any
DELIVERY_FILE_ID = "_delivery_file_id"  # the stored file a record came from
MAPPING = "_mapping"  # the harmonization hash a harmonized version was made under
HELD_BACK = "_held_back"  # a current record today's mapping rejects: stored, not released
# For a held-back record: the first release year from which harmonizing it again under the same
# mapping may release it (it was rejected only because its year of registration lay after the
# release year: `year_out_of_range`); NA: no release year can (rejected for another reason);
# UNKNOWN_RELEASE_YEAR: not known (held back before this was kept), tried whenever the year moves.
RELEASABLE_FROM = "_releasable_from"
UNKNOWN_RELEASE_YEAR = 0
YEAR_OUT_OF_RANGE = "year_out_of_range"  # the mapper's reason (harmonize/mapper.py)
ORIGIN = "_origin"  # a staged row's source in a run: the delivery or the store
FROM_DELIVERY, FROM_STORE = "delivery", "store"
# A row the reader could not read whole carries a reason code and the column that made it
# unreadable; the mapper rejects it with that reason, so it is counted, never lost.
REJECT = "_reject"
REJECT_COLUMN = "_reject_column"

# Cell markers of the staged frame.
INVALID = "<invalid>"  # a value was present but unreadable; the value itself is gone


class Outcome(StrEnum):
    """Where an input row ended. The values are the reconciliation's keys, so
    `rows_read = harmonized + rejected + excluded + erased + duplicates_merged`."""

    HARMONIZED = "harmonized"
    REJECTED = "rejected"
    EXCLUDED = "excluded"
    ERASED = "erased"  # withdrawal (delivered or registered)
    DUPLICATES_MERGED = "duplicates_merged"  # same case twice, or the same person twice


# Outcomes that carry a reason code (counted per reason in the reconciliation).
OUTCOMES_WITH_REASON = (Outcome.REJECTED, Outcome.EXCLUDED)

# --- tables the stages hand each other (and the release reports) ------------------------------
OUTCOME_COLUMNS = [FILE, ROW, "outcome", "reason", "column"]
UNMAPPED_COLUMNS = ["partner", "field", "source_value", "count"]
UNMAPPED_REPORT_COLUMNS = [*UNMAPPED_COLUMNS, "note"]
ISSUE_COLUMNS = ["partner", "field", "issue", "count"]
REJECT_REPORT_COLUMNS = ["partner", "file", "row", "column", "reason"]
