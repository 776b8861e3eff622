"""Run the synthesis DAG in-process on one asset event, as the scheduler would (demo, tests).

The scheduler creates an asset-triggered run whose `consumed_asset_events` are the queued
events; tasks see them as `triggering_asset_events`. `dag.test()` creates a plain run, so the
event is attached to that run right after it is created, before any task starts.
"""

from __future__ import annotations

from unittest import mock

ASSET_URI = "ctdc://harmonized-release/"  # as Airflow normalizes ctdc://harmonized-release


def latest_event_id(release: str) -> int | None:
    """The newest `ctdc://harmonized-release` event whose extra names `release`."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = (
            select(AssetEvent.id, AssetEvent.extra)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.uri == ASSET_URI)
            .order_by(AssetEvent.timestamp.desc(), AssetEvent.id.desc())
        )
        for event_id, extra in session.execute(query):
            if (extra or {}).get("release") == release:
                return int(event_id)
    return None


def run_on_asset_event(dag, event_id: int, conf: dict | None = None):
    """`dag.test()` with the asset event `event_id` as the run's triggering event."""
    from airflow.models import dagrun as dagrun_module
    from airflow.models.asset import AssetEvent

    create = dagrun_module.get_or_create_dagrun

    def create_consuming(**kwargs):
        run = create(**kwargs)
        session = kwargs["session"]
        run.consumed_asset_events.append(session.get(AssetEvent, event_id))
        session.commit()
        return run

    with mock.patch.object(dagrun_module, "get_or_create_dagrun", create_consuming):
        return dag.test(run_conf=conf or {})
