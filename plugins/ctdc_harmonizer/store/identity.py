"""Which stored record a delivered row is, and the order a release lists its records in.

A record's **identity key** (64 hex digits) is what a later delivery must carry for its row
to replace the stored version (a revision) rather than add a record:

- the record's keyed pseudonym where its partner gives one (a hash of the record id, or of
  the identifying fields for partners without one: privacy/pseudonyms.py);
- otherwise a keyed hash of the record's staged values: such a record can only be found
  again unchanged (a partner without an id or names, like the legacy CTDC layout);
- the k-th row of a delivery with the same base (two people with the same name and date of
  birth, two identical legacy rows) gets the keyed hash of the base and k, so identities stay
  unique within a partner and equal again when the delivery is repeated.

A record's **content key** is a keyed hash of its staged values as read (before anything is
withheld from the store): equal content keys, unchanged record.

The **release order** of a record is a hash of the release label and its identity key: a
release lists its records in an order unrelated to the input (and to the partners' order),
the same on every rebuild, and removing an erased record moves no other.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from ctdc_harmonizer.ingest.withdrawals import KEY_SEPARATOR
from ctdc_harmonizer.privacy.pseudonyms import keyed_hash, keyed_hash64
from ctdc_harmonizer.text import arrow_text

IDENTITY_DOMAIN = "record"
CONTENT_DOMAIN = "content"


def row_text(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    """The values of `columns` per row as one text (missing as an empty part, the unit
    separator between parts): what content keys and content identities hash. Joined by
    Arrow in one pass (adding the columns one by one copies the growing text each time)."""
    if not columns:
        return pd.Series("", index=frame.index, dtype="string")
    import pyarrow.compute as pc

    parts = [arrow_text(frame[name]) for name in columns]
    joined = pc.binary_join_element_wise(
        *parts, KEY_SEPARATOR, null_handling="replace", null_replacement=""
    )
    return pd.Series(pd.array(joined, dtype="string"), index=frame.index)


def content_keys(text: pd.Series, key: bytes) -> pd.Series:
    """Keyed 64-bit hash of each row's text (`row_text`; signed int64, as the store keeps
    it)."""
    hashed = keyed_hash64(text, key, CONTENT_DOMAIN)
    return pd.Series(hashed.to_numpy(dtype=np.uint64).view(np.int64), index=text.index)


def identity_keys(partner: str, pseudonyms: pd.Series, content: pd.Series, key: bytes) -> pd.Series:
    """Per row (in delivery order) its identity key (see the module docstring). `content`:
    the row texts used where a row has no pseudonym."""
    domain = f"{IDENTITY_DOMAIN}{KEY_SEPARATOR}{partner}"
    base = pseudonyms.astype("string")
    missing = base.isna().to_numpy()
    if missing.any():  # hashed only where there is no pseudonym (HMAC is most of the cost)
        base[missing] = keyed_hash(content[missing], key, domain).array
    occurrence = base.groupby(base, sort=False).cumcount()
    repeated = occurrence > 0
    keys = base.copy()
    if repeated.any():
        again = base[repeated] + "#" + occurrence[repeated].astype("string")
        keys[repeated] = keyed_hash(again, key, domain)
    return keys.astype("string")


def _seed(label: str) -> np.uint64:
    return np.uint64(int.from_bytes(hashlib.sha256(label.encode("utf-8")).digest()[:8], "big"))


def _mix(values: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: every input bit moves every output bit."""
    with np.errstate(over="ignore"):
        z = values.copy()
        z ^= z >> np.uint64(30)
        z *= np.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> np.uint64(27)
        z *= np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return z


_HEX = np.zeros(256, dtype=np.uint8)
_HEX[np.frombuffer(b"0123456789abcdef", dtype=np.uint8)] = np.arange(16, dtype=np.uint8)


def hex_words(identities: pd.Series) -> np.ndarray:
    """The first two 64-bit words of each 64-hex-digit key, as an (n, 2) uint64 array,
    without a Python object per key: the first 32 digits made 16 bytes (two digits a byte,
    in uint8), read as two big-endian words."""
    import pyarrow as pa

    text = pa.chunked_array(
        identities.astype("string[pyarrow]").array.__arrow_array__(), type=pa.string()
    ).combine_chunks()
    if len(text) == 0:
        return np.zeros((0, 2), dtype=np.uint64)
    if text.null_count or not all(len(v) == 64 for v in (text[0].as_py(), text[-1].as_py())):
        raise ValueError("identity keys must be 64 hex digits")
    offsets = np.frombuffer(text.buffers()[1], dtype=np.int32)[
        text.offset : text.offset + len(text) + 1
    ]
    if not (np.diff(offsets) == 64).all():
        raise ValueError("identity keys must be 64 hex digits")
    data = np.frombuffer(text.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    digits = _HEX[data.reshape(len(text), 64)[:, :32]]
    packed = (digits[:, 0::2] << np.uint8(4)) | digits[:, 1::2]  # (n, 16) bytes
    return np.ascontiguousarray(packed).view(">u8").astype(np.uint64)


def release_order(label: str, identities: pd.Series) -> np.ndarray:
    """Positions that list the records of release `label` in its order (see above)."""
    words = hex_words(identities)
    order_key = _mix(words[:, 0] ^ _seed(label))
    # Ties (a 1 in 2^64 event) fall back on the rest of the key, never on input order.
    return np.lexsort((words[:, 1], order_key))
