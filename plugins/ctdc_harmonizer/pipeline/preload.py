"""What `ctdc run`'s fork server does before it forks anything: importing this module.

The partners' workers and the background process are forked from the fork server, so what
it imports they have for free (the steps import their modules lazily, so that an Airflow
task pays only for its own: the fork server pays once, here).

The import runs with Python's cyclic garbage collector paused, then freezes what it made
(`memory.imported_then_frozen`): an import makes many objects and almost no garbage, and a
forked process then neither walks them again nor copies their memory pages. At 40k records
the workers' chains took about 0.35 s less CPU in all.

Only the fork server imports this module: a process that keeps running code (a test
session, an Airflow task) should not freeze what it may later want collected.
"""

from __future__ import annotations

import importlib

from ctdc_harmonizer.memory import imported_then_frozen

# The chains' libraries and modules, in import order.
PRELOADED = (
    "pandas",
    "pyarrow",
    "pyarrow.compute",
    "pyarrow.json",
    "pyarrow.parquet",
    "pandera.pandas",
    "ctdc_harmonizer.pipeline.annual_update.partner_chain",
    "ctdc_harmonizer.pipeline.annual_update.comparison",
    "ctdc_harmonizer.ingest.extract",
    "ctdc_harmonizer.ingest.deidentify",
    "ctdc_harmonizer.ingest.withdrawals",
    "ctdc_harmonizer.harmonize.contracts",
    "ctdc_harmonizer.harmonize.mapper",
    "ctdc_harmonizer.privacy.stage",
    "ctdc_harmonizer.store.records",
    "ctdc_harmonizer.store.identity",
    "ctdc_harmonizer.warehouse.connection",
)


with imported_then_frozen():
    for _name in PRELOADED:
        importlib.import_module(_name)
