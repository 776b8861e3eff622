"""The pseudonym key: a deployment secret, never in the repository, a plan, XCom or a log.

The CLI reads it from the environment ($CTDC_PSEUDONYM_KEY); in Airflow it is the Variable
`ctdc_pseudonym_key`, served by the deployment's secrets backend (Airflow also exposes a
Variable set as $AIRFLOW_VAR_CTDC_PSEUDONYM_KEY). The key is resolved where it is needed
(the reading step), so it never travels through a plan or XCom. A run without a key refuses
to start: pseudonyms made with a different key would not match the withdrawal registry,
and a survivor who withdrew would come back.
"""

from __future__ import annotations

import os
import secrets
import sys

from ctdc_harmonizer.errors import CtdcError

KEY_ENV = "CTDC_PSEUDONYM_KEY"
AIRFLOW_VARIABLE = "ctdc_pseudonym_key"
MIN_KEY_BYTES = 32  # HMAC-SHA-256: a key shorter than the hash weakens it

MISSING = (
    "no pseudonym key: set the environment variable CTDC_PSEUDONYM_KEY (command line) or "
    "the Airflow Variable 'ctdc_pseudonym_key' in the secrets backend (DAG) to the "
    "deployment's secret (at least 32 bytes, e.g. 64 hex digits from "
    "`python -c 'import secrets; print(secrets.token_hex(32))'`). Keep the same key for "
    "every run: withdrawals are recorded as pseudonyms made with it"
)


def _airflow_variable() -> str:
    """The Airflow Variable, when running inside Airflow (a task imports it); else empty."""
    value = os.environ.get("AIRFLOW_VAR_" + AIRFLOW_VARIABLE.upper(), "")
    if value:
        return value
    if "airflow" not in sys.modules:  # the command line: never import Airflow (its config)
        return ""
    try:
        from airflow.sdk import Variable
    except ImportError:
        return ""
    try:
        return Variable.get(AIRFLOW_VARIABLE, default=None) or ""
    except Exception:  # outside a task (no API server) or no such Variable: not configured
        return ""


def pseudonym_key() -> bytes:
    """The deployment's pseudonym key; CtdcError when none (or a too short one) is set.
    The message never contains the key."""
    text = os.environ.get(KEY_ENV, "").strip() or _airflow_variable().strip()
    if not text:
        raise CtdcError(MISSING)
    key = text.encode("utf-8")
    if len(key) < MIN_KEY_BYTES:
        raise CtdcError(
            f"the pseudonym key is too short ({len(key)} bytes; at least {MIN_KEY_BYTES}): "
            "generate one with `python -c 'import secrets; print(secrets.token_hex(32))'`"
        )
    return key


def throwaway_key() -> str:
    """A random key for the demo only: its pseudonyms mean nothing after the process ends."""
    return secrets.token_hex(32)
