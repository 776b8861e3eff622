"""Keyed pseudonyms (HMAC-SHA-256) of case records, computed in the reading step.

A record's pseudonym is the HMAC of its partner and record id where the partner has one,
else of its normalised identifying fields (the same `withdrawals.match_on` fields and the
same normaliser `identity_key` a withdrawal by identifying fields uses: a withdrawal and
the record it names must give the same pseudonym, in this run and in every later run).
Without the key a pseudonym cannot be recomputed from a name or an id, so it can be stored
with the case record in the warehouse; it is still personal data (pseudonymised, not
anonymous) and never leaves the warehouse: no release file, report, log or XCom holds one.
"""

from __future__ import annotations

try:  # OpenSSL's one-shot HMAC without the hmac module's wrapper (what hmac.digest calls)
    from _hashlib import hmac_digest
except ImportError:  # pragma: no cover - CPython without OpenSSL
    from hmac import digest as hmac_digest

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ctdc_harmonizer.ingest.withdrawals import KEY_SEPARATOR, identity_key
from ctdc_harmonizer.mapping.spec import PartnerConfig
from ctdc_harmonizer.text import arrow_text, per_distinct

BY_RECORD_ID = "id"
BY_IDENTITY = "who"


def _digests(texts: pa.Array | pa.ChunkedArray, key: bytes, domain: str) -> bytes:
    """HMAC-SHA-256 of `domain` + each text (none missing), concatenated: 32 bytes each."""
    prefix = pa.scalar((domain + KEY_SEPARATOR).encode("utf-8"), type=pa.binary())
    messages = pc.binary_join_element_wise(prefix, texts.cast(pa.binary()), b"")
    return b"".join([hmac_digest(key, message, "sha256") for message in messages.to_pylist()])


def keyed_hash(values: pd.Series, key: bytes, domain: str) -> pd.Series:
    """HMAC-SHA-256 (hex) of `domain` + each value; missing stays missing. Each distinct
    value is hashed once (names and dates repeat; ids do not, ~1 s per million)."""

    def digest(distinct: pd.Series) -> pd.Series:
        digests = _digests(arrow_text(distinct), key, domain).hex().encode("ascii")
        # 64 hex digits per value, laid end to end: an Arrow string array over that buffer.
        count = len(distinct)
        offsets = np.arange(0, 64 * (count + 1), 64, dtype=np.int32)
        hexes = pa.Array.from_buffers(
            pa.string(), count, [None, pa.py_buffer(offsets), pa.py_buffer(digests)]
        )
        return pd.Series(pd.array(hexes, dtype="string"), index=distinct.index)

    return per_distinct(values.astype("string"), digest)


def keyed_hash64(values: pd.Series, key: bytes, domain: str) -> pd.Series:
    """The first 64 bits of HMAC-SHA-256(`domain` + value), as unsigned integers; missing
    stays missing. For keys that are only compared within a run (cross-partner linkage): an
    integer is an eighth of the hex text's memory and factorises without a Python object.
    Two distinct values share a key with odds of about n^2 / 2^65 (1 in 30 million at a
    million values)."""
    encoded = pc.dictionary_encode(arrow_text(values).combine_chunks())
    digests = np.frombuffer(_digests(encoded.dictionary, key, domain), dtype="<u8").reshape(-1, 4)
    present = encoded.indices.is_valid().to_numpy(zero_copy_only=False)
    codes = pc.fill_null(encoded.indices, 0).to_numpy(zero_copy_only=False).astype(np.int64)
    keys = digests[codes, 0] if len(digests) else np.zeros(len(codes), dtype=np.uint64)
    return pd.Series(pd.arrays.IntegerArray(keys, ~present), index=values.index)


def pseudonym_method(config: PartnerConfig) -> str:
    """How this partner's records are pseudonymised ('' when they cannot be)."""
    if config.record_id:
        return BY_RECORD_ID
    if config.withdrawal_match:
        return BY_IDENTITY
    return ""


def pseudonym_columns(config: PartnerConfig) -> list[str]:
    """The extract fields the reader must read to compute pseudonyms."""
    method = pseudonym_method(config)
    if method == BY_RECORD_ID:
        return [config.record_id]
    if method == BY_IDENTITY:
        return list(config.withdrawal_match)
    return []


def pseudonymize(partner: str, method: str, keys: pd.Series, key: bytes) -> pd.Series:
    """Pseudonyms of record ids (method 'id') or identity keys ('who') of one partner."""
    if not method:
        return pd.Series(pd.NA, index=keys.index, dtype="string")
    return keyed_hash(keys, key, f"{method}{KEY_SEPARATOR}{partner}")


def record_keys(config: PartnerConfig, frame: pd.DataFrame) -> pd.Series:
    """What a record's pseudonym is made of: its trimmed record id or its identity key."""
    method = pseudonym_method(config)
    if method == BY_RECORD_ID:
        ids = frame[config.record_id].astype("string").str.strip()
        return ids.where(ids != "")
    if method == BY_IDENTITY:
        return identity_key(frame, [config.field(name) for name in config.withdrawal_match])
    return pd.Series(pd.NA, index=frame.index, dtype="string")


def record_pseudonyms(config: PartnerConfig, frame: pd.DataFrame, key: bytes) -> pd.Series:
    """Per record of a frame as read (identifiers still present), its pseudonym."""
    return pseudonymize(config.code, pseudonym_method(config), record_keys(config, frame), key)
