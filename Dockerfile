# The Airflow image of device-sync: the official Airflow 3.3.2 image plus the pinned runtime requirements
# (requirements.txt: Airflow itself, the postgres and amazon providers and every transitive dependency) and the
# device-sync wheel that `make dist` builds (the package, its SQL and stage files, the plugin's entry point):
# the same artifact MWAA users deploy. Only the DAG file is copied; docker-compose.yaml mounts the working
# copy's dags/ over it for development. Build with `make dist && docker compose build`.
# The Airflow and Python versions here are the ones requirements.txt was compiled for: keep them equal
# (tests/test_compose_unit.py checks it).
FROM apache/airflow:3.3.2-python3.11

COPY requirements.txt /requirements.txt
COPY dist/ /tmp/device-sync-dist/
# "apache-airflow==${AIRFLOW_VERSION}" keeps pip from ever changing the image's Airflow (the image sets
# AIRFLOW_VERSION; requirements.txt pins the same version).
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" /tmp/device-sync-dist/device_sync-*.whl -r /requirements.txt

COPY --chown=airflow:0 dags/ /opt/airflow/dags/
