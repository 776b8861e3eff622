"""Where the project's data files live (codebook, partner mappings)."""

from __future__ import annotations

import os
from pathlib import Path

# plugins/ctdc_harmonizer/paths.py -> repository root
REPO_ROOT = Path(__file__).resolve().parents[2]


def schemas_dir() -> Path:
    return Path(os.environ.get("CTDC_SCHEMAS_DIR", REPO_ROOT / "schemas"))


def mappings_dir() -> Path:
    return Path(os.environ.get("CTDC_MAPPINGS_DIR", REPO_ROOT / "mappings"))
