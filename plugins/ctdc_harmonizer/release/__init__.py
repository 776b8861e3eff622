"""The release: reconciliation, the folder built aside, quality, publication with the
warehouse load, the folder/warehouse check and the counts-only report."""
