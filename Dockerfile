# The Airflow image of device-sync: the official Airflow 3.3.2 image plus the pinned runtime requirements
# (requirements.txt: Airflow itself, the postgres and amazon providers and every transitive dependency), and
# the project's dags/, plugins/ and include/ side by side under /opt/airflow, so the image also runs without
# the bind mounts of docker-compose.yaml (which mounts the working copy over them for development).
# The Airflow and Python versions here are the ones requirements.txt was compiled for: keep them equal
# (tests/test_compose_unit.py checks it).
FROM apache/airflow:3.3.2-python3.11

COPY requirements.txt /requirements.txt
# "apache-airflow==${AIRFLOW_VERSION}" keeps pip from ever changing the image's Airflow (the image sets
# AIRFLOW_VERSION; requirements.txt pins the same version).
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /requirements.txt

COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/
COPY --chown=airflow:0 include/ /opt/airflow/include/
