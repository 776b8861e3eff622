"""What the reading step adds for privacy: pseudonyms, linkage keys, registry erasure.

Called by the staging step (pipeline/annual_update/partner_chain.py) while the identifiers are
still in the frame; what it returns holds keyed hashes only, kept in the run's private work
folder.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ctdc_harmonizer.columns import PSEUDONYM
from ctdc_harmonizer.ingest.withdrawals import Withdrawals, erased_rows, match_columns
from ctdc_harmonizer.mapping.spec import PartnerConfig
from ctdc_harmonizer.privacy import linkage, pseudonyms, registry
from ctdc_harmonizer.text import is_in


def read_columns(config: PartnerConfig, withdrawals: Withdrawals | None) -> list[str]:
    """Identifying fields the reader must read (and deidentify then drops)."""
    names = [
        *match_columns(withdrawals),
        *pseudonyms.pseudonym_columns(config),
        *linkage.linkage_columns(config),
    ]
    return list(dict.fromkeys(names))


def private_columns(config: PartnerConfig, frame: pd.DataFrame, key: bytes) -> pd.DataFrame:
    """Per record as read: its pseudonym and its linkage keys."""
    out = linkage.linkage_keys(config, frame, key)
    out.insert(0, PSEUDONYM, pseudonyms.record_pseudonyms(config, frame, key))
    return out.reset_index(drop=True)


def apply_withdrawals(
    url: str,
    config: PartnerConfig,
    withdrawals: Withdrawals | None,
    keys: list[pd.Series],
    private: pd.DataFrame,
    key: bytes,
) -> tuple[np.ndarray, pd.DataFrame, int]:
    """(rows erased, pseudonyms to register, how many were erased by the registry alone).

    A delivered withdrawal line that matches no delivered record is honoured when the person
    it names is already registered or is in a stored release (the registry purges it there);
    one that matches nothing anywhere is still an error (withdrawals.erased_rows)."""
    method = pseudonyms.pseudonym_method(config)
    honoured = None
    requested = pd.Series(dtype="string")
    if withdrawals is not None:
        request_method = (
            pseudonyms.BY_RECORD_ID if withdrawals.by_record_id else pseudonyms.BY_IDENTITY
        )
        if request_method == method:  # the request names the person as the pseudonym does
            requested = pseudonyms.pseudonymize(config.code, method, withdrawals.keys, key)
            known = registry.known_pseudonyms(url, config.code, requested)
            honoured = requested.isin(known)
    erased = erased_rows(withdrawals, keys, honoured)
    registered = registry.known_pseudonyms(url, config.code)
    by_registry = is_in(private[PSEUDONYM], registered)
    new = pd.concat(
        [requested.dropna(), private.loc[erased, PSEUDONYM].dropna()],
        ignore_index=True,
    ).drop_duplicates()
    withdrawn = pd.DataFrame({"pseudonym": new.astype("string"), "partner": config.code})
    return erased | by_registry, withdrawn, int((by_registry & ~erased).sum())
