"""Airflow plugin entry point (the only module of plugins/ that Airflow imports itself)."""

from ctdc_release_report.plugin import CtdcReleaseReportPlugin

__all__ = ["CtdcReleaseReportPlugin"]
