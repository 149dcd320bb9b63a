#!/usr/bin/env bash
# Runs once, on the first start of the postgres container (empty data volume), as the superuser:
# one role and one database per consumer, each owning only its own database.
#   airflow         Airflow metadata database (+ Celery result backend)
#   mlflow          MLflow tracking / model registry backend store
#   feast_registry  Feast SQL registry (role `feast`)
# Passwords come from the container environment (AIRFLOW_DB_PASSWORD, MLFLOW_DB_PASSWORD,
# FEAST_DB_PASSWORD) and are passed to psql as variables, never spliced into SQL text.
set -euo pipefail

create() {  # role database password
    psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER}" --dbname postgres \
        -v role="$1" -v db="$2" -v pw="$3" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'pw';
CREATE DATABASE :"db" OWNER :"role";
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
SQL
}

create airflow airflow "${AIRFLOW_DB_PASSWORD:?}"
create mlflow mlflow "${MLFLOW_DB_PASSWORD:?}"
create feast feast_registry "${FEAST_DB_PASSWORD:?}"
