"""ctdc_harmonizer: partners' case extracts onto the CTDC Global Synthetic Data codebook v3.

Stages, each a sub-package: `mapping` (partner folders), `ingest` (read and de-identify),
`harmonize` (onto the codebook), `privacy` (pseudonyms, withdrawals, linkage), `release`
(reconcile, write, check, publish), `warehouse` (SQLAlchemy + Alembic), `synthesis` (DP), and
`run` (the plan, the work folder and the steps the CLI and the DAGs call). docs/architecture.md
says where each kind of change goes.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ctdc-harmonizer")  # pyproject.toml is the one place it is written
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
