"""The annual update, declared once: what `ctdc run` and the `ctdc_annual_update` DAG run.

    [the DAG: wait_for_deliveries, deferred on the triggerer until every drop has a complete
     new delivery or the deadline passes] -> pull_deliveries -> plan_release
      -> per partner with work: stage_partner -> check_staged_contract -> harmonize_partner
                                -> check_codebook_contract -> compare_with_store
      -> read_carried_records -> assemble_release -> write_receipts
      -> send_receipts (to the partners' outboxes) -> build_release_folder -> summarize_release
      -> [approval: the DAG asks the data team; the command line goes on]
      -> commit_release -> publish_release_folder -> purge_withdrawn_records -> hand_off_release
      -> clear_pulled_deliveries
    teardown: finish_run

Nothing before the approval changes the store or publishes anything (the pull records what
arrived, in delivery_received; the receipts report on deliveries, not on the release).
"""

from __future__ import annotations

from ctdc_harmonizer.pipeline.annual_update.deliveries import (
    clear_pulled_deliveries,
    pull_deliveries,
    send_receipts,
)
from ctdc_harmonizer.pipeline.annual_update.partner_chain import (
    check_codebook_contract,
    check_staged_contract,
    compare_with_store,
    harmonize_partner,
    stage_partner,
)
from ctdc_harmonizer.pipeline.annual_update.publication import (
    commit_release,
    hand_off_release,
    publish_release_folder,
    purge_withdrawn_records,
)
from ctdc_harmonizer.pipeline.annual_update.release import (
    assemble_release,
    build_release_folder,
    read_carried_records,
    summarize_release,
    write_receipts,
)
from ctdc_harmonizer.pipeline.declaration import Pipeline
from ctdc_harmonizer.run.finish import finish_run
from ctdc_harmonizer.run.plan import plan_release

ANNUAL_UPDATE = Pipeline(
    name="annual_update",
    before_plan=pull_deliveries,
    plan=plan_release,
    per_partner=(
        stage_partner,
        check_staged_contract,
        harmonize_partner,
        check_codebook_contract,
        compare_with_store,
    ),
    steps=(
        read_carried_records,
        assemble_release,
        write_receipts,
        send_receipts,
        build_release_folder,
        summarize_release,
    ),
    gate="approve",
    after_gate=(
        commit_release,
        publish_release_folder,
        purge_withdrawn_records,
        hand_off_release,
        clear_pulled_deliveries,
    ),
    teardown=finish_run,
)
