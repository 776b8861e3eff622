"""The encrypted copy of a pulled delivery (AES-256-GCM), kept only when a retention is set.

The key is a deployment secret like the pseudonym key, and never stored beside the data: the
command line reads $CTDC_DELIVERY_KEY, Airflow the Variable `ctdc_delivery_key` from its
secrets backend (or $AIRFLOW_VAR_CTDC_DELIVERY_KEY): 64 hex digits (32 bytes). A copy is the
12-byte nonce then the ciphertext and tag; the partner, file name and SHA-256 are its
associated data, so a copy renamed or moved to another partner does not decrypt.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from ctdc_harmonizer.errors import CtdcError

KEY_ENV = "CTDC_DELIVERY_KEY"
AIRFLOW_VARIABLE = "ctdc_delivery_key"
NONCE_BYTES = 12
MISSING = (
    "no delivery key: a source keeps encrypted copies (keep_encrypted_days > 0), so set "
    "CTDC_DELIVERY_KEY (command line) or the Airflow Variable 'ctdc_delivery_key' in the "
    "secrets backend to 64 hex digits (`python -c 'import secrets; print(secrets.token_hex(32))'`)"
)


def _airflow_variable() -> str:
    value = os.environ.get("AIRFLOW_VAR_" + AIRFLOW_VARIABLE.upper(), "")
    if value or "airflow" not in sys.modules:
        return value
    try:
        from airflow.sdk import Variable

        return Variable.get(AIRFLOW_VARIABLE, default=None) or ""
    except Exception:  # outside a task, or not configured
        return ""


def delivery_key() -> bytes:
    """The 32-byte key; CtdcError (never quoting the key) when missing or malformed."""
    text = os.environ.get(KEY_ENV, "").strip() or _airflow_variable().strip()
    if not text:
        raise CtdcError(MISSING)
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise CtdcError("the delivery key must be 64 hex digits (32 bytes)") from None
    if len(key) != 32:
        raise CtdcError(f"the delivery key has {len(key)} bytes; AES-256 needs 32")
    return key


def _associated(partner: str, name: str, sha256: str) -> bytes:
    return f"{partner}\0{name}\0{sha256}".encode()


def seal(plain: Path, target: Path, partner: str, name: str, sha256: str, key: bytes) -> None:
    """Write the encrypted copy of `plain` to `target` (owner-only, written aside first)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = secrets.token_bytes(NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, plain.read_bytes(), _associated(partner, name, sha256))
    part = target.with_name(target.name + ".part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(nonce + sealed)
    part.replace(target)


def unseal(sealed: Path, partner: str, name: str, sha256: str, key: bytes) -> bytes:
    """The delivered bytes again; CtdcError when the key, partner, name or checksum differ."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    data = sealed.read_bytes()
    try:
        return AESGCM(key).decrypt(
            data[:NONCE_BYTES], data[NONCE_BYTES:], _associated(partner, name, sha256)
        )
    except InvalidTag:
        raise CtdcError(
            f"partner '{partner}', file '{name}': the encrypted copy does not open with this "
            "key (another key, or the copy was altered)"
        ) from None
