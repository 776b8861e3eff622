"""The CTDC warehouse: ICS-TIP tables (entity, release, batch, case record) via Alembic."""

from __future__ import annotations

from ctdc_harmonizer.warehouse.loader import load_release
from ctdc_harmonizer.warehouse.schema import default_warehouse_url, migrate

__all__ = ["default_warehouse_url", "load_release", "migrate"]
