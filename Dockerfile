# The Airflow image of device-sync: the official Airflow 3.3.2 image plus the pinned runtime requirements
# (requirements.txt: Airflow itself, the postgres, amazon and celery providers and every transitive dependency)
# and the device-sync wheel that `make dist` builds (the package, its SQL and stage files, the plugin's entry
# point): the same artifact MWAA users deploy. Only the DAG file is copied; docker-compose.yaml mounts the
# working copy's dags/ over it for development. Build with `make dist && docker compose build`.
# AIRFLOW_BASE_IMAGE (a build argument; docker-compose.yaml passes ${AIRFLOW_BASE_IMAGE}) selects another base
# image made like the official one, for example a mirror of it or a company-built image; tests/compose builds
# on a locally built stand-in. The Airflow and Python versions of the default are the ones requirements.txt was
# compiled for: keep them equal (tests/unit/test_compose_unit.py checks it).
ARG AIRFLOW_BASE_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${AIRFLOW_BASE_IMAGE}

COPY requirements.txt /requirements.txt
COPY dist/ /tmp/device-sync-dist/
# "apache-airflow==${AIRFLOW_VERSION}" keeps pip from ever changing the image's Airflow (the image sets
# AIRFLOW_VERSION; requirements.txt pins the same version).
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" /tmp/device-sync-dist/device_sync-*.whl -r /requirements.txt

COPY --chown=airflow:0 dags/ /opt/airflow/dags/
