#!/bin/bash
# Runs once, when the postgres volume is first initialised (docker-entrypoint-initdb.d):
# creates the CTDC warehouse database and its own role next to Airflow's metadata database.
set -euo pipefail

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v ctdc_password="${CTDC_DB_PASSWORD:?CTDC_DB_PASSWORD must be set}" <<'EOSQL'
CREATE ROLE ctdc LOGIN PASSWORD :'ctdc_password';
CREATE DATABASE ctdc OWNER ctdc;
REVOKE ALL ON DATABASE ctdc FROM PUBLIC;
EOSQL
