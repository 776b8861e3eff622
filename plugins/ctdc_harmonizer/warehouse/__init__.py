"""The CTDC warehouse: the system of record (models), its migrations and its connection."""

from __future__ import annotations

from ctdc_harmonizer.warehouse.schema import default_warehouse_url, migrate

__all__ = ["default_warehouse_url", "migrate"]
