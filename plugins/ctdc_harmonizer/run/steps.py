"""The steps of the annual update, by name: what the CLI runs in a row and the DAG runs as tasks.

Each step takes the typed `RunPlan` and returns a small typed result (run/results.py) of paths
and counts, all that may travel through XCom or a log line. Frames stay in the run's work
folder (run/workdir.py). The steps live in three modules by what they need, so that an
Airflow task imports only its own step's libraries (run/airflow.py): the partner chain
(`partner_steps`), the release (`release_steps`), and the end of a run (`finish`).
"""

from __future__ import annotations

from ctdc_harmonizer.run.finish import finish_run, release_outcome
from ctdc_harmonizer.run.partner_steps import (
    check_codebook,
    check_contract,
    map_to_codebook,
    partner_chain,
    stage_partner,
)
from ctdc_harmonizer.run.release_steps import (
    EMPTY_WITHDRAWN,
    combine,
    finish_warehouse_load,
    hand_off,
    load_warehouse,
    start_warehouse_load,
    write_release,
)

__all__ = [
    "EMPTY_WITHDRAWN",
    "check_codebook",
    "check_contract",
    "combine",
    "finish_run",
    "finish_warehouse_load",
    "hand_off",
    "load_warehouse",
    "map_to_codebook",
    "partner_chain",
    "release_outcome",
    "stage_partner",
    "start_warehouse_load",
    "write_release",
]
