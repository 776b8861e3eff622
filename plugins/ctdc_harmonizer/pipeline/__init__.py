"""The pipelines, declared once (`declaration`): the annual update and the synthesis, each a
list of typed steps that the Airflow DAGs (`airflow`) and the command line (`local`) run.
Typed step results live in `results`."""
