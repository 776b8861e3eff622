"""Fixtures of the bad-input corpus: one pristine seeded landing per session, copied per case."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.corpus import RECORDS, SEED, Case, Env, new_env


@pytest.fixture(scope="session")
def pristine_landing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All four partners' sample extracts, small and seeded; never modified."""
    from ctdc_harmonizer import samples

    landing = tmp_path_factory.mktemp("corpus-pristine")
    samples.generate_all(landing, RECORDS, SEED)
    return landing


@pytest.fixture
def corpus_env(pristine_landing: Path, tmp_path: Path):
    def make(case: Case) -> Env:
        return new_env(pristine_landing, tmp_path / "case", case)

    return make
