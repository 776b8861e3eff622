"""Fixtures of the DAG tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def dagbag(repo_root: Path):
    """The project's DAG folder parsed once for the session, as the dag-processor parses it."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(repo_root / "dags"))
