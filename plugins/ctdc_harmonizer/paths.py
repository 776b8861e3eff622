"""Where the project's data files live (codebook, partner mappings)."""

from __future__ import annotations

import os
from pathlib import Path

# plugins/ctdc_harmonizer/paths.py -> repository root
REPO_ROOT = Path(__file__).resolve().parents[2]


# An installed wheel has no repository around it: it carries schemas/ and mappings/ here
# (pyproject.toml, force-include).
PACKAGED_DATA = Path(__file__).resolve().parent / "_data"


def _project_folder(name: str) -> Path:
    """The checkout's folder when there is one (a developer, the image), else the wheel's."""
    checkout = REPO_ROOT / name
    packaged = PACKAGED_DATA / name
    return packaged if not checkout.is_dir() and packaged.is_dir() else checkout


def schemas_dir() -> Path:
    return Path(os.environ.get("CTDC_SCHEMAS_DIR") or _project_folder("schemas"))


def mappings_dir() -> Path:
    return Path(os.environ.get("CTDC_MAPPINGS_DIR") or _project_folder("mappings"))


def ctdc_home() -> Path:
    """Where a deployment keeps its data unless told otherwise: $AIRFLOW_HOME/ctdc."""
    return Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser() / "ctdc"


# What an empty landing or out means, as the trigger form says it (one wording).
DEFAULT_LANDING_RULE = "$CTDC_LANDING, else $AIRFLOW_HOME/ctdc/landing"
DEFAULT_OUT_RULE = "$CTDC_OUT, else $AIRFLOW_HOME/ctdc/releases"


def default_landing() -> str:
    """The landing folder when none is named: $CTDC_LANDING, else $AIRFLOW_HOME/ctdc/landing."""
    return os.environ.get("CTDC_LANDING") or str(ctdc_home() / "landing")


def default_out() -> str:
    """The out folder when none is named: $CTDC_OUT, else $AIRFLOW_HOME/ctdc/releases."""
    return os.environ.get("CTDC_OUT") or str(ctdc_home() / "releases")


def mapped_partners(root: str | Path | None = None) -> list[str]:
    """The partners with a mapping folder (cheap: folder names only)."""
    folder = Path(root) if root else mappings_dir()
    return sorted(p.parent.name for p in folder.glob("*/partner.yaml"))
