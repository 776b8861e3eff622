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

import hashlib

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ctdc_harmonizer.ingest.withdrawals import KEY_SEPARATOR, identity_key
from ctdc_harmonizer.mapping.spec import PartnerConfig
from ctdc_harmonizer.text import arrow_text, per_distinct

BY_RECORD_ID = "id"
BY_IDENTITY = "who"


_BLOCK = 64  # SHA-256's block size, in bytes (RFC 2104's B)


def _digests(texts: pa.Array | pa.ChunkedArray, key: bytes, domain: str) -> bytes:
    """HMAC-SHA-256 of `domain` + each text (none missing), concatenated: 32 bytes each.

    HMAC as RFC 2104 defines it, H((K ^ opad) || H((K ^ ipad) || domain || text)), with the
    two keyed states (and the domain) hashed once and copied per text: about half the cost
    of a one-shot HMAC per text, which sets the key up again each time (tests check the
    result against the hmac module)."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    inner.update((domain + KEY_SEPARATOR).encode("utf-8"))
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    inner_copy, outer_copy = inner.copy, outer.copy
    digests = []
    append = digests.append
    for text in texts.cast(pa.binary()).to_pylist():
        state = inner_copy()
        state.update(text)
        result = outer_copy()
        result.update(state.digest())
        append(result.digest())
    return b"".join(digests)


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
