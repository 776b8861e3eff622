"""Shared test setup.

The whole pytest process uses an isolated, throw-away Airflow home (SQLite metadata DB,
no example DAGs, the repository's dags/ folder, logs inside it). The environment is set
here, at import time, because Airflow reads its configuration once, on first import.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="ctdc-test-airflow-"))

os.environ.update(
    {
        "AIRFLOW_HOME": str(AIRFLOW_HOME),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        # Not the repository's plugins/: Airflow would import every module in it by file name.
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(AIRFLOW_HOME / "plugins"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{AIRFLOW_HOME / 'airflow.db'}",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(AIRFLOW_HOME / "logs"),
    }
)
# Run-time settings of the DAG must come from the tests, never from the developer's shell.
for _name in ("CTDC_LANDING", "CTDC_OUT", "CTDC_WAREHOUSE_URL"):
    os.environ.pop(_name, None)
# The pseudonym key is a deployment secret: the tests make a random one per session (never a
# key written in the repository); tests of the missing-key refusal remove it.
os.environ["CTDC_PSEUDONYM_KEY"] = secrets.token_hex(32)
if not os.environ.get("CTDC_KEEP_TEST_AIRFLOW_HOME"):
    atexit.register(shutil.rmtree, AIRFLOW_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    """The isolated AIRFLOW_HOME of this pytest process."""
    return AIRFLOW_HOME


@pytest.fixture(scope="session")
def sample_landing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A landing folder with every available partner's sample extract (seeded)."""
    from ctdc_harmonizer import samples

    landing = tmp_path_factory.mktemp("landing")
    samples.generate_all(landing, seed=2025)
    return landing
