"""Seeded generators of realistic sample extracts, one per bundled partner.

Identifier fields carry invented values (see fake.py), so the pipeline's
de-identification is exercised on every demo and test run.
"""

from __future__ import annotations

import importlib
from pathlib import Path

# partner code -> module in this package with generate(out_dir, n, seed) -> list[Path]
GENERATORS = {
    "case_management": "case_management",
    "iom": "iom",
    "hotline": "hotline",
    "ctdc_legacy": "ctdc_legacy",
}
DEFAULT_RECORDS = 600


def available() -> list[str]:
    return [code for code, module in GENERATORS.items() if _has(module)]


def _has(module: str) -> bool:
    return (Path(__file__).parent / f"{module}.py").exists()


def generate(partner: str, out_dir: Path, n: int = DEFAULT_RECORDS, seed: int = 2025) -> list[Path]:
    module = importlib.import_module(f"ctdc_harmonizer.samples.{GENERATORS[partner]}")
    return module.generate(Path(out_dir), n, seed)


def generate_all(
    out_dir: Path, n: int = DEFAULT_RECORDS, seed: int = 2025, partners: list[str] | None = None
) -> dict[str, list[Path]]:
    """Write each partner's sample extract into out_dir/<partner>/ (a landing folder)."""
    chosen = partners or available()
    return {p: generate(p, out_dir, n, seed + i) for i, p in enumerate(chosen)}
