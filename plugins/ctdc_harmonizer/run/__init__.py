"""Running the annual update: the plan, the work folder, the steps (for the CLI and the
DAGs), the release lock and the Airflow task boundary."""
